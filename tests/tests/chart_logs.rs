//! The chart's controller health and logging values: the liveness probe
//! asks `/livez`, `logs.format` is the controller's `--log-format` and
//! `logs.level` its `KSA_LOG`, and a format the controller does not know is
//! refused by the chart's schema.

use anyhow::{Context as _, Result, ensure};
use clap::Parser as _;
use ksa_controller::run::{LogFormat, RunArgs};
use ksa_tests::readme::{helm_command, workspace};
use serde_json::Value;

/// `helm template` of the chart with these `--set` values: the controller
/// Deployment, or helm's error.
fn deployment(values: &[&str]) -> Result<Value> {
    let chart = workspace().join("charts").join("ksa");
    let mut command = helm_command()?;
    command
        .args(["template", "ksa", "--namespace", "ksa-system"])
        .arg(&chart);
    for value in values {
        command.args(["--set", value]);
    }
    let out = command.output().context("running helm")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    serde_saphyr::from_multiple::<Value>(&text)?
        .into_iter()
        .find(|object| object["kind"] == "Deployment")
        .context("no Deployment rendered")
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// The controller's args, as `ksa-controller` parses them.
fn run_args(container: &Value) -> Result<RunArgs> {
    let args: Vec<&str> = container["args"]
        .as_array()
        .context("no args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(args.first() == Some(&"run"), "{args:?}");
    Ok(RunArgs::try_parse_from(
        std::iter::once("ksa-controller").chain(args[1..].iter().copied()),
    )?)
}

fn ksa_log(container: &Value) -> Option<&str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|env| env["name"] == "KSA_LOG")?["value"]
        .as_str()
}

#[test]
fn the_chart_probes_livez_and_sets_the_log_level_and_format() -> Result<()> {
    let default = deployment(&[])?;
    let controller = container(&default);
    assert_eq!(controller["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(controller["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(matches!(run_args(controller)?.log_format, LogFormat::Json));
    assert_eq!(ksa_log(controller), None, "the controller's default filter");

    // helm --set splits at commas unless escaped.
    let set = deployment(&[r"logs.level=info\,ksa_controller=debug", "logs.format=text"])?;
    let controller = container(&set);
    assert!(matches!(run_args(controller)?.log_format, LogFormat::Text));
    assert_eq!(ksa_log(controller), Some("info,ksa_controller=debug"));
    // The filter the chart passes is one the controller takes.
    ksa_controller::logging::filter(ksa_log(controller), None)?;

    let refused = deployment(&["logs.format=yaml"]).expect_err("refused");
    assert!(refused.to_string().contains("/logs/format"), "{refused}");
    Ok(())
}

#[test]
fn the_chart_serves_the_audit_webhook_over_https_with_the_controllers_own_flags() -> Result<()> {
    let default = run_args(container(&deployment(&[])?))?;
    assert_eq!(default.audit.audit_public_url, None, "off by default");
    let enabled = deployment(&[
        "audit.enabled=true",
        "audit.publicUrl=https://ksa-audit.example/audit",
        "audit.tls.secretName=audit-tls",
    ])?;
    let controller = container(&enabled);
    let args = run_args(controller)?;
    assert_eq!(
        args.audit.audit_public_url.as_deref(),
        Some("https://ksa-audit.example/audit")
    );
    // The URL the chart renders is one the controller takes.
    ksa_controller::audit::public_url(
        args.audit
            .audit_public_url
            .as_deref()
            .context("no --audit-public-url")?,
    )?;
    assert_eq!(args.audit.audit_addr.port(), 9443);
    let dir = std::path::Path::new("/etc/ksa/audit-tls");
    assert_eq!(
        args.audit.audit_tls_cert_file.as_deref(),
        Some(dir.join("tls.crt").as_path())
    );
    assert_eq!(
        args.audit.audit_tls_key_file.as_deref(),
        Some(dir.join("tls.key").as_path())
    );
    assert_eq!(
        args.audit.audit_ca_file.as_deref(),
        Some(dir.join("ca.crt").as_path())
    );
    let ports = controller["ports"].as_array().context("no ports")?;
    ensure!(
        ports
            .iter()
            .any(|p| p["name"] == "audit" && p["containerPort"] == 9443),
        "{ports:?}"
    );
    let volumes = enabled["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .context("no volumes")?;
    ensure!(
        volumes
            .iter()
            .any(|v| v["name"] == "audit-tls" && v["secret"]["secretName"] == "audit-tls"),
        "{volumes:?}"
    );
    // HTTPS only, at a URL: the chart refuses what the controller would.
    for values in [
        &["audit.enabled=true", "audit.tls.secretName=audit-tls"][..],
        &[
            "audit.enabled=true",
            "audit.publicUrl=https://ksa-audit.example/audit",
        ][..],
        &[
            "audit.enabled=true",
            "audit.publicUrl=http://ksa-audit.example/audit",
            "audit.tls.secretName=audit-tls",
        ][..],
        // The controller serves POST /audit/NAMESPACE/NAME: a URL whose
        // path does not end in /audit reaches nothing.
        &[
            "audit.enabled=true",
            "audit.publicUrl=https://ksa-audit.example",
            "audit.tls.secretName=audit-tls",
        ][..],
        &[
            "audit.enabled=true",
            "audit.publicUrl=https://ksa-audit.example/audit?x=1",
            "audit.tls.secretName=audit-tls",
        ][..],
    ] {
        ensure!(deployment(values).is_err(), "{values:?} rendered");
    }
    Ok(())
}
