//! `ksa status decode`.

use crate::args::StatusCommand;
use crate::{Failure, Outcome};

pub fn run(command: StatusCommand) -> Outcome {
    match command {
        StatusCommand::Decode { text, output } => {
            let text = crate::input::argument(text, "status line")?;
            // The core's one decoded form, which the browser's
            // `decodeStatus` returns too.
            let value = ksa_core::status::decode(&text).map_err(Failure::bad_input)?;
            crate::output::finish(&crate::output::render(&output, &value, || {
                crate::output::data(&value, crate::args::DataFormat::Json)
            })?)
        }
    }
}
