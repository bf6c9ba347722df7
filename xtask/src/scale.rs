//! The scale part of `cargo xtask bench`, on real control planes:
//!
//! - legacy token refresh at growing numbers of Secrets
//!   (`ksa-bench-refresh`), beside a bare update loop: the control plane is
//!   pinned to CPU 0 and the clients (the loop, the controller) to CPU 1,
//!   as a cluster keeps workloads off its control-plane nodes, so both face
//!   the same API server;
//! - bound token refresh (restart-pods) of growing numbers of Deployments
//!   on nodes kwok simulates (`ksa-bench-rollout`), beside a bare
//!   `kubectl rollout restart` of them all; and of as many workloads of the
//!   zoo's mix (`ksa-bench-rollout --zoo`: every kind of workload, some
//!   refreshed by eviction, some holding no token), beside a bare restart
//!   of what they hold;
//! - a fleet (issue 34): N hosted user clusters rotated at once by one
//!   controller (`ksa-bench-fleet`), for N = 1, 5 and 20 (1 and 3 with
//!   `--quick`): the time until all complete, the controller's memory and
//!   CPU per user cluster and its requests to the admin API server per
//!   rotation, and how each grows with N (`cargo xtask bench fleet` runs
//!   this part alone);
//!
//! into the report, and a chart, `target/bench/scale.png` (the README shows
//! a copy in `docs/`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::bench::{number, result, run_json, write_report};

/// The font the chart is drawn with (Debian's `fonts-dejavu-core`, which
/// the set-up installs).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Builds the release `ksa`, `ksa-controller` and the bench programs
/// `benches` (of ksa-tests) that drive them.
fn build_release(benches: &[&str]) -> Result<()> {
    let mut args = vec![
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
    ];
    for bench in benches {
        args.extend(["--bin", bench]);
    }
    crate::run(crate::cargo().args(args))
}

pub fn run(quick: bool) -> Result<()> {
    let root = crate::root();
    let environment = crate::control_plane::environment()?;
    build_release(&["ksa-bench-refresh", "ksa-bench-rollout", "ksa-bench-fleet"])?;
    let bin = |name: &str| root.join("target/release").join(name);
    let secrets: &[&str] = if quick {
        &["200", "1000"]
    } else {
        &["1000", "5000", "10000"]
    };
    let legacy = rows(
        &run_json(
            pinned(&bin("ksa-bench-refresh"))
                .args(secrets)
                .envs(environment.clone()),
        )?,
        "ksa-bench-refresh",
    )?;
    let deployments: &[&str] = if quick {
        &["100", "400"]
    } else {
        &["500", "1000", "2000"]
    };
    let bound = rows(
        &run_json(
            Command::new(bin("ksa-bench-rollout"))
                .args(deployments)
                .envs(environment.clone()),
        )?,
        "ksa-bench-rollout",
    )?;
    let zoo = rows(
        &run_json(
            Command::new(bin("ksa-bench-rollout"))
                .arg("--zoo")
                .args(deployments)
                .envs(environment.clone()),
        )?,
        "ksa-bench-rollout --zoo",
    )?;
    let mut results = legacy_results(&legacy)?;
    results.extend(bound_results(&bound, "deployments")?);
    results.extend(bound_results(&zoo, "zoo_workloads")?);
    results.extend(fleet_results(&fleet_run(quick, &environment)?)?);
    write_report(&root.join("target/bench"), results)?;
    chart(&legacy, &bound, &zoo, &root.join("target/bench/scale.png"))
}

/// `cargo xtask bench fleet [--quick]`: the fleet part alone.
pub fn fleet(quick: bool) -> Result<()> {
    let root = crate::root();
    let environment = crate::control_plane::environment()?;
    build_release(&["ksa-bench-fleet"])?;
    let results = fleet_results(&fleet_run(quick, &environment)?)?;
    write_report(&root.join("target/bench"), results)
}

/// The fleet sizes: 1, 5 and 20 user clusters (1 and 3 quick), or those
/// `KSA_BENCH_FLEET_SIZES` lists (space-separated), for a machine that
/// holds fewer or more.
fn fleet_run(quick: bool, environment: &[(&'static str, PathBuf); 2]) -> Result<Value> {
    let sizes: Vec<String> = match std::env::var("KSA_BENCH_FLEET_SIZES") {
        Ok(sizes) if !sizes.trim().is_empty() => {
            sizes.split_whitespace().map(str::to_owned).collect()
        }
        _ if quick => vec!["1".into(), "3".into()],
        _ => vec!["1".into(), "5".into(), "20".into()],
    };
    let program = crate::root().join("target/release/ksa-bench-fleet");
    run_json(
        Command::new(program)
            .args(&sizes)
            .envs(environment.iter().cloned()),
    )
}

/// The rows of `ksa-bench-fleet`, and the growth of each total from the
/// smallest fleet to the largest beside the growth of the fleet (the
/// reference: a ratio above 1 is a cost growing faster than linearly).
fn fleet_results(measured: &Value) -> Result<Vec<Value>> {
    let rows = rows(measured, "ksa-bench-fleet")?;
    let mut results = Vec::new();
    for row in &rows {
        let n = number(row, "clusters")?;
        let at = |name: &str| format!("fleet.{name}_{n}_clusters");
        results.push(result(
            &at("seconds_all_completed"),
            number(row, "seconds_all_completed")?,
            "s",
            Some(("first completed", number(row, "first_completed_seconds")?)),
        ));
        results.push(result(
            &at("controller_peak_rss_mib_per_cluster"),
            number(row, "controller_peak_rss_mib_per_cluster")?,
            "MiB",
            Some(("peak total", number(row, "controller_peak_rss_mib")?)),
        ));
        results.push(result(
            &at("controller_cpu_seconds_per_cluster"),
            number(row, "controller_cpu_seconds_per_cluster")?,
            "s",
            Some(("total", number(row, "controller_cpu_seconds")?)),
        ));
        results.push(result(
            &at("admin_api_requests_per_rotation"),
            number(row, "admin_api_requests_per_rotation")?,
            "requests",
            Some(("total", number(row, "admin_api_requests")?)),
        ));
    }
    if let Some(stopped) = measured["stopped"].as_object() {
        eprintln!(
            "STOPPED: the fleet bench stopped at {} user clusters: {}",
            stopped.get("clusters").unwrap_or(&Value::Null),
            stopped.get("error").and_then(Value::as_str).unwrap_or("")
        );
    }
    let growth = &measured["growth"];
    if let Some(n_ratio) = growth["clusters"].as_f64() {
        for (field, what) in [
            ("seconds_all_completed", "time to complete all"),
            ("controller_peak_rss_mib", "controller peak memory"),
            ("controller_cpu_seconds", "controller CPU"),
            ("admin_api_requests", "admin API requests"),
        ] {
            let ratio = number(&growth[field], "ratio")?;
            if growth[field]["superlinear"].as_bool() == Some(true) {
                eprintln!(
                    "SUPERLINEAR: the fleet's {what} grew {ratio:.2}x for {n_ratio:.0}x the clusters"
                );
            }
            results.push(result(
                &format!("fleet.growth.{field}"),
                ratio,
                "x",
                Some(("growth of the clusters", n_ratio)),
            ));
        }
    }
    Ok(results)
}

fn rows(measured: &Value, bench: &str) -> Result<Vec<Value>> {
    measured["sizes"]
        .as_array()
        .cloned()
        .with_context(|| format!("no sizes in {bench}'s output"))
}

/// `program` on CPU 1 and the control plane it starts on CPU 0, when
/// there are two CPUs to split (otherwise as is).
fn pinned(program: &PathBuf) -> Command {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        return Command::new(program);
    }
    let mut command = Command::new("taskset");
    command
        .args(["--cpu-list", "1"])
        .arg(program)
        .env("KSA_CONTROL_PLANE_CPUS", "0");
    command
}

fn legacy_results(rows: &[Value]) -> Result<Vec<Value>> {
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
    Ok(results)
}

/// The rows of a restart-pods run: on plain Deployments (`what` is
/// `deployments`) or the zoo's mix (`zoo_workloads`).
fn bound_results(rows: &[Value], what: &str) -> Result<Vec<Value>> {
    let mut results = Vec::new();
    for row in rows {
        let n = number(row, "workloads")?;
        let at = |name: &str| format!("{name}_{n}_{what}");
        results.push(result(
            &at("refresh.bound_seconds"),
            number(row, "refresh_seconds")?,
            "s",
            Some(("bare rollout restart", number(row, "bare_seconds")?)),
        ));
        results.push(result(
            &at("refresh.bound_api_requests_per_workload"),
            number(row, "api_requests_per_workload")?,
            "requests",
            None,
        ));
        results.push(result(
            &at("rotation.api_requests"),
            number(row, "rotation_api_requests")?,
            "requests",
            Some(("workloads", n)),
        ));
        results.push(result(
            &at("rotation.seconds"),
            number(row, "rotation_seconds")?,
            "s",
            None,
        ));
        results.push(result(
            &at("controller.peak_rss_mib"),
            number(row, "controller_peak_rss_mib")?,
            "MiB",
            Some(("target", 100.0)),
        ));
    }
    Ok(results)
}

/// Three panels: seconds to refresh legacy tokens (the controller beside
/// the bare update loop) over Secrets, seconds to refresh bound tokens (the
/// controller beside a bare restart, on Deployments and on the zoo's mix)
/// over workloads, and one rotation's API requests over all.
fn chart(legacy: &[Value], bound: &[Value], zoo: &[Value], path: &Path) -> Result<()> {
    let font =
        std::fs::read(FONT).with_context(|| format!("reading {FONT} (fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{FONT} is not a font plotters can read"))?;
    let series = |rows: &[Value], x: &str, y: &str| -> Result<Vec<(f64, f64)>> {
        rows.iter()
            .map(|row| Ok((number(row, x)?, number(row, y)?)))
            .collect()
    };
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let (top, bottom) = root.split_vertically(450);
    let (left, right) = top.split_horizontally(600);
    panel(
        &left,
        "Legacy token refresh",
        "Secrets",
        "seconds",
        &[
            Line {
                points: series(legacy, "secrets", "refresh_seconds")?,
                label: "ksa-controller re-mints",
                color: BLUE,
            },
            Line {
                points: series(legacy, "secrets", "bare_seconds")?,
                label: "bare update loop (API server limit)",
                color: RED,
            },
        ],
    )?;
    panel(
        &right,
        "Bound token refresh (restart-pods, kwok)",
        "Deployments, or workloads of the zoo's mix",
        "seconds",
        &[
            Line {
                points: series(bound, "workloads", "refresh_seconds")?,
                label: "ksa-controller, Deployments",
                color: BLUE,
            },
            Line {
                points: series(bound, "workloads", "bare_seconds")?,
                label: "bare rollout restart (cluster limit)",
                color: RED,
            },
            Line {
                points: series(zoo, "workloads", "refresh_seconds")?,
                label: "ksa-controller, zoo mix",
                color: CYAN,
            },
            Line {
                points: series(zoo, "workloads", "bare_seconds")?,
                label: "bare restart of the zoo mix (no pacing)",
                color: MAGENTA,
            },
        ],
    )?;
    panel(
        &bottom,
        "API requests of one rotation",
        "Secrets, Deployments or workloads of the zoo mix in the cluster",
        "requests",
        &[
            Line {
                points: series(legacy, "secrets", "rotation_api_requests")?,
                label: "legacy token Secrets",
                color: GREEN,
            },
            Line {
                points: series(bound, "workloads", "rotation_api_requests")?,
                label: "Deployments (restart-pods)",
                color: MAGENTA,
            },
            Line {
                points: series(zoo, "workloads", "rotation_api_requests")?,
                label: "zoo mix (restart-pods)",
                color: CYAN,
            },
        ],
    )?;
    root.present().map_err(draw)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// One series of a panel.
struct Line {
    points: Vec<(f64, f64)>,
    label: &'static str,
    color: RGBColor,
}

/// One line chart from the origin, a line and points per series.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[Line],
) -> Result<()> {
    let points = lines.iter().flat_map(|line| &line.points);
    let max_x = points.clone().map(|p| p.0).fold(0.0, f64::max) * 1.05;
    let max_y = points.map(|p| p.1).fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(draw)?;
    for Line {
        points,
        label,
        color,
    } in lines
    {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(draw)?
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(draw)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    Ok(())
}

fn draw<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error:?}")
}
