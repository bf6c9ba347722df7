//! The scale part of `cargo xtask bench`: legacy token refresh and one
//! rotation's API cost at growing numbers of Secrets, on a real control
//! plane (`ksa-bench-refresh`), into the report and a chart,
//! `target/bench/scale.png` (the README shows a copy in `docs/`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::Value;

use crate::bench::{number, result, run_json, write_report};

/// The font the chart is drawn with (Debian's `fonts-dejavu-core`, which
/// the set-up installs).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn run(quick: bool) -> Result<()> {
    let root = crate::root();
    let control_plane = crate::control_plane::ensure()?;
    crate::run(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "ksa-cli",
        "-p",
        "ksa-controller",
        "-p",
        "ksa-tests",
        "--bin",
        "ksa",
        "--bin",
        "ksa-controller",
        "--bin",
        "ksa-bench-refresh",
    ]))?;
    let sizes: &[&str] = if quick {
        &["200", "1000"]
    } else {
        &["1000", "5000", "10000"]
    };
    let measured = run_json(
        Command::new(root.join("target/release/ksa-bench-refresh"))
            .args(sizes)
            .env(crate::control_plane::ENV, &control_plane),
    )?;
    let rows = measured["sizes"]
        .as_array()
        .context("no sizes in ksa-bench-refresh output")?;
    let mut results = Vec::new();
    for row in rows {
        let n = number(row, "secrets")?;
        let at = |name: &str| format!("{name}_{n}");
        results.push(result(
            &at("refresh.legacy_ratio"),
            number(row, "controller_per_s")?,
            "Secrets/s",
            Some(("bare concurrent update loop", number(row, "bare_per_s")?)),
        ));
        results.push(result(
            &at("refresh.writes_per_secret"),
            number(row, "writes_per_secret")?,
            "writes",
            Some(("target", 1.0)),
        ));
        results.push(result(
            &at("controller.peak_rss_mib"),
            number(row, "controller_peak_rss_mib")?,
            "MiB",
            Some(("target", 100.0)),
        ));
        results.push(result(
            &at("controller.cpu_seconds"),
            number(row, "controller_cpu_seconds")?,
            "s",
            Some(("rotation seconds", number(row, "rotation_seconds")?)),
        ));
        results.push(result(
            &at("rotation.api_requests"),
            number(row, "rotation_api_requests")?,
            "requests",
            Some(("Secrets", n)),
        ));
        results.push(result(
            &at("rotation.seconds"),
            number(row, "rotation_seconds")?,
            "s",
            None,
        ));
    }
    write_report(&root.join("target/bench"), results)?;
    chart(rows, &root.join("target/bench/scale.png"))
}

/// Two panels over the number of Secrets: seconds to refresh them (the
/// controller beside the bare update loop), and the rotation's API
/// requests.
fn chart(rows: &[Value], path: &Path) -> Result<()> {
    let font =
        std::fs::read(FONT).with_context(|| format!("reading {FONT} (fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{FONT} is not a font plotters can read"))?;
    let series = |field: &str| -> Result<Vec<(f64, f64)>> {
        rows.iter()
            .map(|row| Ok((number(row, "secrets")?, number(row, field)?)))
            .collect()
    };
    let controller = series("refresh_seconds")?;
    let bare = series("bare_seconds")?;
    let requests = series("rotation_api_requests")?;
    let max_x = controller.iter().map(|p| p.0).fold(0.0, f64::max) * 1.05;
    let max_of = |points: &[(f64, f64)]| points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.15;

    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let (left, right) = root.split_horizontally(600);
    let mut refresh = ChartBuilder::on(&left)
        .caption("Legacy token refresh", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..max_x, 0.0..max_of(&controller).max(max_of(&bare)))
        .map_err(draw)?;
    refresh
        .configure_mesh()
        .x_desc("Secrets")
        .y_desc("seconds")
        .draw()
        .map_err(draw)?;
    for (points, label, color) in [
        (&controller, "ksa-controller re-mints", BLUE),
        (&bare, "bare update loop (API server limit)", RED),
    ] {
        refresh
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(draw)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        refresh
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(draw)?;
    }
    refresh
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;

    let mut cost = ChartBuilder::on(&right)
        .caption("API requests of one rotation", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_x, 0.0..max_of(&requests))
        .map_err(draw)?;
    cost.configure_mesh()
        .x_desc("Secrets")
        .y_desc("requests")
        .draw()
        .map_err(draw)?;
    cost.draw_series(LineSeries::new(
        requests.iter().copied(),
        GREEN.stroke_width(2),
    ))
    .map_err(draw)?;
    cost.draw_series(requests.iter().map(|p| Circle::new(*p, 4, GREEN.filled())))
        .map_err(draw)?;
    root.present().map_err(draw)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn draw<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error:?}")
}
