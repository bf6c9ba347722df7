//! The status line parser: never panics, and a line it accepts prints back
//! as a line that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(line) = ksa_core::status::parse(text) {
        let printed = line.to_string();
        let again = ksa_core::status::parse(&printed).expect("a printed status line parses");
        assert_eq!(again, line);
    }
});
