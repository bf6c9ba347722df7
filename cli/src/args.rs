//! The command line, as clap parses it. Examples are part of each command's
//! `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCompleter;

use crate::completion::{complete_context, complete_namespace};

const EXIT_CODES: &str = "\
Exit codes:
  0  done (for `token verify`: the token is valid)
  1  failed (for `token verify`: the token is not valid)
  2  usage error or bad input
  3  refused: another key rotation or cluster operation is in progress
  4  could not check (for `token verify`: a --jwks URL could not be fetched
     or held no JWKS, no trusted key could be loaded, or the result could not
     be written); nothing is known about the token
  5  still running: `--wait` gave up at its timeout, and the rotation goes on";

/// `ksa --version`: the version, and what `ksa version` says.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KSA_COMMIT"),
    ", ",
    env!("KSA_COMMIT_DATE"),
    ", ",
    env!("KSA_TARGET"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "ksa",
    version,
    long_version = LONG_VERSION,
    about = "Rotate a Kubernetes cluster's service-account signing key with no workload logged out; decode and verify service-account tokens",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    /// Log to stderr, as kubectl's -v: -v alone or -v=4 says what ksa
    /// does; -v=6 adds each request, -v=8 everything (0: errors only, the
    /// default). KSA_LOG (a tracing filter) wins.
    #[arg(
        short = 'v',
        long = "v",
        visible_alias = "verbose",
        global = true,
        value_name = "LEVEL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "4",
        value_parser = clap::value_parser!(u8).range(0..=10),
    )]
    pub verbosity: Option<u8>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Change cluster credentials (as `gkectl update credentials`).
    Update {
        #[command(subcommand)]
        what: UpdateCommand,
    },
    /// Start a rotation of the signing key (short for `update credentials
    /// ksa-signing-key rotate`).
    #[command(after_help = concat!(
        "Examples:\n",
        "  kubectl ksa rotate --config user-cluster.yaml --kubeconfig admin.kubeconfig --wait\n",
        "  kubectl ksa rotate --pki-dir /etc/kubernetes/pki --manifests-dir /etc/kubernetes/manifests --kubeconfig /etc/kubernetes/admin.conf --wait\n\n",
        "Exit codes: 0 done (or started, without --wait), 1 failed, 2 bad input, 3 another operation in progress, 5 still running (--wait gave up at its timeout; the rotation goes on)"
    ))]
    Rotate(KeyRotateArgs),
    /// Print what a rotation of the signing key would do, changing nothing
    /// (short for `update credentials ksa-signing-key rotate --dry-run`).
    #[command(after_help = concat!(
        "Examples:\n",
        "  kubectl ksa plan --config user-cluster.yaml --kubeconfig admin.kubeconfig\n",
        "  kubectl ksa plan --pki-dir /etc/kubernetes/pki --manifests-dir /etc/kubernetes/manifests -o json\n",
        "  kubectl ksa plan -A --kubeconfig admin.kubeconfig --timeout 30m --detailed-exit-code\n\n",
        "Exit codes of -A: 0 the plan made, whatever each rotation's outcome; 1 it could not be made (the admin cluster unreachable, the CRD missing, listing forbidden); 2 bad flags. With --detailed-exit-code, a plan made exits 0 when every rotation would start, 3 when one would be refused and every other would start, 4 when one could not be planned"
    ))]
    Plan(PlanArgs),
    /// Print where the key rotation stands (short for `update credentials
    /// ksa-signing-key status`); `status decode` decodes a status line.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = concat!(
            "Examples:\n",
            "  kubectl ksa status --config user-cluster.yaml --kubeconfig admin.kubeconfig -o wide\n",
            "  kubectl ksa status --config user-cluster.yaml -o jsonpath='{.condition.status}'\n",
            "  ksa status decode 'State of KSASigningKeyRotation with ...'"
        )
    )]
    Status {
        #[command(subcommand)]
        command: Option<StatusCommand>,
        #[command(flatten)]
        args: StatusArgs,
    },
    /// Make keys and key sets in the formats kube-apiserver reads.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Decode, verify and mint service-account tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the version, the commit it was built from, its date and the
    /// target.
    #[command(after_help = "Examples:\n  ksa version\n  ksa version -o json")]
    Version {
        /// Output format: text (one line), json, yaml or jsonpath=TEMPLATE.
        #[arg(long, short = 'o', value_name = "FORMAT", default_value = "text", value_parser = TEXT_OR_DATA)]
        output: Output,
    },
    /// Print the shell's completion script: it asks ksa for candidates, so
    /// kubeconfig contexts and namespaces complete too (for `kubectl ksa`,
    /// install the kubectl_complete-ksa binary on the PATH instead).
    #[command(
        after_help = "Examples:\n  ksa completions bash > /etc/bash_completion.d/ksa\n  source <(KSA_COMPLETE=bash ksa)   # the same, for this shell only"
    )]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write man pages (one per command) into a directory.
    #[command(hide = true)]
    Man {
        /// The directory to write the man pages into.
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum UpdateCommand {
    /// Cluster credentials.
    Credentials {
        #[command(subcommand)]
        which: CredentialsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum CredentialsCommand {
    /// The service-account token signing key.
    #[command(name = "ksa-signing-key")]
    KsaSigningKey {
        #[command(subcommand)]
        action: RotationCommand,
    },
    /// The service-account token issuer (`--service-account-issuer`).
    #[command(name = "ksa-issuer")]
    KsaIssuer {
        #[command(subcommand)]
        action: IssuerCommand,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The user cluster config file (gkectl format).
    #[arg(long, value_name = "USER_CLUSTER_CONFIG", conflicts_with = "pki_dir")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The namespace of the rotation in the admin cluster; default: the
    /// config's ksaSigningKeyRotation.namespace, else the cluster name.
    #[arg(
        long,
        short = 'n',
        value_name = "NAMESPACE",
        conflicts_with = "pki_dir",
        add = ArgValueCompleter::new(complete_namespace)
    )]
    pub namespace: Option<String>,
    /// The namespace of ksa-controller's leader Lease, which rotate (and
    /// status --watch) check is held before they start; only Leases there
    /// count. Default: ksa-system when a leader Lease is there, else the
    /// one namespace holding a Lease named ksa-controller-leader.
    #[arg(
        long,
        value_name = "NAMESPACE",
        conflicts_with = "pki_dir",
        add = ArgValueCompleter::new(complete_namespace)
    )]
    pub controller_namespace: Option<String>,
    /// A kubeadm control plane instead: its pki directory
    /// (/etc/kubernetes/pki). ksa drives the rotation itself, keeping its
    /// state there; no controller is involved.
    #[arg(long, value_name = "DIR")]
    pub pki_dir: Option<PathBuf>,
}

/// kubectl's connection flags, with kubectl's precedence.
#[derive(Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// The kubeconfig (of the admin cluster; with --pki-dir, the cluster's
    /// admin kubeconfig); default: the files of $KUBECONFIG, merged, then
    /// ~/.kube/config.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; default: its current-context.
    #[arg(long, value_name = "NAME", add = ArgValueCompleter::new(complete_context))]
    pub context: Option<String>,
    /// How long one request to the API server may take: 0 (no limit), a
    /// number of seconds, or a duration such as 30s or 1m.
    #[arg(long, value_name = "DURATION", default_value = "0")]
    pub request_timeout: String,
}

// `rotate`: of the key (and with --issuer, of the issuer too).
#[derive(Args, Debug)]
pub struct KeyRotateArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// With --pki-dir: kubeadm's static pod manifests
    /// (/etc/kubernetes/manifests), edited at each step.
    #[arg(long, value_name = "DIR", requires = "pki_dir")]
    pub manifests_dir: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub skip_prompt: bool,
    /// Follow the rotation to the end, printing each new status line.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 30m, 2h), exiting 5 while
    /// the rotation goes on; with --wait. Default: the longest the
    /// rotation can take when nothing holds it (three roll-outs, the
    /// trust lead time, and the longest refresh window). With -A
    /// --dry-run: how long the whole fleet plan may take (default 10m),
    /// as `plan -A --timeout`.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Also change the token issuer to this https URL, in the same
    /// steps (one token refresh for both).
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// Change nothing: print the plan (API servers, legacy and bound
    /// tokens, who would be restarted, evicted or cut off, the refresh
    /// window, each step) from the live cluster.
    #[arg(long)]
    pub dry_run: bool,
    /// The plan's format, with --dry-run: text, json, yaml or jsonpath=TEMPLATE.
    #[arg(long, short = 'o', value_name = "FORMAT", default_value = "text", value_parser = TEXT_OR_DATA, requires = "dry_run")]
    pub output: Output,
    /// Go on although legacy tokens used outside the cluster (no pod
    /// mounts them) will be re-minted, cutting their holders off.
    #[arg(long)]
    pub accept_outside_legacy_tokens: bool,
    /// With --dry-run: plan every rotation in the admin cluster, as
    /// `plan -A` (rotations are started one cluster at a time).
    #[arg(
        long,
        short = 'A',
        requires = "dry_run",
        conflicts_with_all = ["config", "namespace", "pki_dir", "issuer", "manifests_dir", "wait"]
    )]
    pub all_namespaces: bool,
    /// With -A --dry-run: exit with what the fleet's rotations say, as
    /// `plan -A --detailed-exit-code`: 0 every one would start, 3 one
    /// would be refused, 4 one could not be planned.
    #[arg(long, requires = "all_namespaces", conflicts_with_all = ["config", "namespace", "pki_dir"])]
    pub detailed_exit_code: bool,
}

// `status`: where a rotation stands.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output format: text (the status line on stdout, where it stands
    /// on stderr), wide (a table, a column per field), json or yaml
    /// (the status with its line), or jsonpath=TEMPLATE over the json
    /// (`-o jsonpath={.condition.status}`).
    #[arg(long, short = 'o', value_name = "FORMAT", default_value = "text", value_parser = WITH_WIDE)]
    pub output: Output,
    /// Keep printing each new status line until the rotation completes.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Every rotation in the admin cluster, one line each (NAMESPACE NAME
    /// STEP READY REASON WAITING FOR AGE), with a summary on stderr; -o
    /// wide adds the key versions, the step's age and the issuer; json,
    /// yaml and jsonpath give `{items, summary}`. Needs no --config.
    #[arg(
        long,
        short = 'A',
        conflicts_with_all = ["config", "namespace", "pki_dir", "watch"]
    )]
    pub all_namespaces: bool,
}

// `plan`: `rotate --dry-run`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// With --pki-dir: kubeadm's static pod manifests
    /// (/etc/kubernetes/manifests).
    #[arg(long, value_name = "DIR", requires = "pki_dir")]
    pub manifests_dir: Option<PathBuf>,
    /// Plan a change of the token issuer to this https URL too.
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// The plan's format: text, json, yaml or jsonpath=TEMPLATE.
    #[arg(long, short = 'o', value_name = "FORMAT", default_value = "text", value_parser = TEXT_OR_DATA)]
    pub output: Output,
    /// Plan a key rotation of every rotation in the admin cluster: one
    /// line each (would rotate, and what; refused, and why; or not
    /// planned), and a summary; needs no --config (the user cluster
    /// configs are not read: enableAdvancedCluster is not checked).
    /// Exits 0 once the plan is made, whatever each rotation's outcome
    /// (see --detailed-exit-code); non-zero when it cannot be made (the
    /// admin cluster unreachable, the CRD missing, listing forbidden).
    #[arg(
        long,
        short = 'A',
        conflicts_with_all = ["config", "namespace", "pki_dir", "issuer", "manifests_dir"]
    )]
    pub all_namespaces: bool,
    /// With -A: exit with what the fleet's rotations say, once the plan is
    /// made: 0 every one would start (or there are none), 3 one would be
    /// refused (another rotation or operation in progress) and every other
    /// would start, 4 one could not be planned (its user cluster
    /// unreachable or unreadable, or --timeout passed first).
    #[arg(long, requires = "all_namespaces", conflicts_with_all = ["config", "namespace", "pki_dir"])]
    pub detailed_exit_code: bool,
    /// With -A: how long the whole plan may take (default 10m); each user
    /// cluster gets at most 2 minutes within it, and the rotations not
    /// planned by then are reported as not planned.
    #[arg(long, value_name = "DURATION", requires = "all_namespaces", conflicts_with_all = ["config", "namespace", "pki_dir"])]
    pub timeout: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RotationCommand {
    /// Start a rotation to the next key version.
    #[command(after_help = concat!(
        "Examples:\n",
        "  ksa update credentials ksa-signing-key rotate --config user-cluster.yaml --kubeconfig admin.kubeconfig\n",
        "  ksa update credentials ksa-signing-key rotate --config user-cluster.yaml --kubeconfig admin.kubeconfig --skip-prompt --wait\n",
        "  ksa update credentials ksa-signing-key rotate --pki-dir /etc/kubernetes/pki --manifests-dir /etc/kubernetes/manifests --kubeconfig /etc/kubernetes/admin.conf --wait\n\n",
        "Exit codes: 0 done (or started, without --wait), 1 failed, 2 bad input, 3 another operation in progress, 5 still running (--wait gave up at its timeout; the rotation goes on)"
    ))]
    Rotate(KeyRotateArgs),
    /// Print where the rotation stands.
    #[command(after_help = concat!(
        "Examples:\n",
        "  ksa update credentials ksa-signing-key status --config user-cluster.yaml --kubeconfig admin.kubeconfig\n",
        "  ksa update credentials ksa-signing-key status --config user-cluster.yaml -o json\n",
        "  ksa update credentials ksa-signing-key status --config user-cluster.yaml --watch"
    ))]
    Status(StatusArgs),
}

#[derive(Subcommand, Debug)]
pub enum IssuerCommand {
    /// Change the token issuer, keeping the signing key.
    #[command(after_help = concat!(
        "Examples:\n",
        "  ksa update credentials ksa-issuer rotate --issuer https://oidc.example.com/cluster-1 --config user-cluster.yaml --kubeconfig admin.kubeconfig\n",
        "  ksa update credentials ksa-issuer rotate --issuer https://oidc.example.com/cluster-1 --pki-dir /etc/kubernetes/pki --manifests-dir /etc/kubernetes/manifests --kubeconfig /etc/kubernetes/admin.conf --wait\n\n",
        "Exit codes: 0 done (or started, without --wait), 1 failed, 2 bad input (a URL that is not https with a host, has a query or fragment, or is already the signing issuer), 3 another operation in progress, 5 still running (--wait gave up at its timeout; the rotation goes on)"
    ))]
    Rotate {
        /// The issuer to change to: an https URL with a host and no query,
        /// fragment or credentials.
        #[arg(long, value_name = "URL")]
        issuer: String,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// With --pki-dir: kubeadm's static pod manifests
        /// (/etc/kubernetes/manifests), edited at each step.
        #[arg(long, value_name = "DIR", requires = "pki_dir")]
        manifests_dir: Option<PathBuf>,
        /// Do not ask for confirmation.
        #[arg(long)]
        skip_prompt: bool,
        /// Follow the rotation to the end, printing each new status line.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (e.g. 30m, 2h), exiting 5 while
        /// the rotation goes on; with --wait. Default: the longest the
        /// rotation can take when nothing holds it (three roll-outs, the
        /// trust lead time, and the longest refresh window).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// Change nothing: print the plan (API servers, legacy and bound
        /// tokens, who would be restarted, evicted or cut off, the refresh
        /// window, each step) from the live cluster.
        #[arg(long)]
        dry_run: bool,
        /// The plan's format, with --dry-run: text, json, yaml or jsonpath=TEMPLATE.
        #[arg(long, short = 'o', value_name = "FORMAT", default_value = "text", value_parser = TEXT_OR_DATA, requires = "dry_run")]
        output: Output,
    },
    /// Print where the issuer rotation stands.
    #[command(after_help = concat!(
        "Examples:\n",
        "  ksa update credentials ksa-issuer status --config user-cluster.yaml --kubeconfig admin.kubeconfig\n",
        "  ksa update credentials ksa-issuer status --pki-dir /etc/kubernetes/pki -o json"
    ))]
    Status(StatusArgs),
}

/// `-o` as kubectl takes it: the command's formats among text, wide,
/// json and yaml, and `jsonpath=TEMPLATE` over its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Text,
    /// Text with more: for `status`, a table with a column per field.
    Wide,
    Json,
    Yaml,
    JsonPath(crate::jsonpath::Template),
}

/// Parses `-o` into [`Output`], taking the formats in `names` and
/// `jsonpath=`; the names are what `--help` and completion offer.
#[derive(Debug, Clone, Copy)]
pub struct OutputParser {
    pub names: &'static [&'static str],
}

/// The formats of a command that prints text or data.
pub const TEXT_OR_DATA: OutputParser = OutputParser {
    names: &["text", "json", "yaml"],
};
/// ... and a wide table (`status`).
pub const WITH_WIDE: OutputParser = OutputParser {
    names: &["text", "wide", "json", "yaml"],
};
/// The formats of a command whose output is data only.
pub const DATA_ONLY: OutputParser = OutputParser {
    names: &["json", "yaml"],
};

impl clap::builder::TypedValueParser for OutputParser {
    type Value = Output;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Output, clap::Error> {
        let text = value.to_str().unwrap_or_default();
        let refuse = |why: String| {
            let flag = arg.map_or("-o".to_owned(), |a| a.to_string());
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value '{text}' for '{flag}': {why}\n"),
            )
            .with_cmd(cmd)
        };
        if let Some(template) = text.strip_prefix("jsonpath=") {
            return crate::jsonpath::Template::parse(template)
                .map(Output::JsonPath)
                .map_err(refuse);
        }
        if text == "jsonpath" {
            return Err(refuse(
                "jsonpath needs a template: -o jsonpath='{.statusLine}'".to_owned(),
            ));
        }
        if !self.names.contains(&text) {
            return Err(refuse(format!(
                "this command's formats are {} and jsonpath=TEMPLATE",
                self.names.join(", ")
            )));
        }
        Ok(match text {
            "text" => Output::Text,
            "wide" => Output::Wide,
            "json" => Output::Json,
            _ => Output::Yaml,
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            self.names
                .iter()
                .map(|name| clap::builder::PossibleValue::new(*name))
                // Completed as far as kubectl's shells complete it.
                .chain(std::iter::once(clap::builder::PossibleValue::new(
                    "jsonpath=",
                ))),
        ))
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// The format of a command whose output is data only.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum StatusCommand {
    /// Decode a status line (one line, or broken over lines as pasted) into JSON.
    #[command(
        after_help = "Example:\n  ksa status decode 'State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: True, reason: KSASigningKeyRotationCompleted, message:{\"tokenVersion\":2,\"privateKeyVersion\":2,\"publicKeyVersions\":[2]}'\n  pbpaste | ksa status decode -"
    )]
    Decode {
        /// The status line, or - to read stdin.
        text: Option<String>,
        /// Output format: json, yaml or jsonpath=TEMPLATE.
        #[arg(long, short = 'o', value_name = "FORMAT", default_value = "json", value_parser = DATA_ONLY)]
        output: Output,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a key pair as sa.key (0600) and sa.pub.
    #[command(
        after_help = "Examples:\n  ksa keys generate --algorithm RS256 --bits 3072 --out /etc/kubernetes/pki/new\n  ksa keys generate --algorithm ES256 --out ."
    )]
    Generate {
        /// The key's algorithm: RS256 (RSA) or ES256 (ECDSA P-256).
        #[arg(long, value_enum, default_value_t = Alg::Rs256)]
        algorithm: Alg,
        /// RSA modulus size: 2048, 3072 or 4096.
        #[arg(long)]
        bits: Option<u32>,
        /// Directory to write sa.key and sa.pub into; created 0700 when
        /// missing.
        #[arg(long)]
        out: PathBuf,
        /// Replace existing files (a symlink is replaced, never followed).
        #[arg(long)]
        force: bool,
        /// Output format: text, json, yaml or jsonpath=TEMPLATE (the
        /// files written and the key's kid).
        #[arg(long, short = 'o', value_name = "FORMAT", default_value = "text", value_parser = TEXT_OR_DATA)]
        output: Output,
    },
    /// Print the JWKS of PEM keys (public parts only), with kube-apiserver's kids.
    #[command(after_help = "Example:\n  ksa keys jwks /etc/kubernetes/pki/sa.pub new/sa.pub")]
    Jwks {
        /// PEM files: public or private keys, several blocks each; - for stdin.
        #[arg(required = true)]
        files: Vec<String>,
        /// Output format: json, yaml or jsonpath=TEMPLATE.
        #[arg(long, short = 'o', value_name = "FORMAT", default_value = "json", value_parser = DATA_ONLY)]
        output: Output,
    },
    /// Import the key a cluster signs with today (kube-apiserver's
    /// --service-account-key-file, sa.key) as a rotation's key version 1,
    /// so that the first rotation trusts it until it is retired.
    #[command(after_help = concat!(
        "Examples:\n",
        "  ksa keys import --rotation user-cluster-1 -n user-cluster-1 --key sa.key\n",
        "  ksa keys import --rotation user-cluster-1 -n user-cluster-1 --key sa.key --kubeconfig admin.kubeconfig -o json\n\n",
        "First asks every API server instance of the user cluster (the rotation's, or --kubeconfig-secret,\n",
        "else the --kubeconfig cluster) for a fresh token and its JWKS: unless each signs with the key and\n",
        "lists it, nothing is written (exit 2). Then writes the Secret NAME-signing-key-v1 (labelled\n",
        "ksa.dev/rotation=NAME, ksa.dev/key-version=1, annotated ksa.dev/kid=KID) and the Secret the API\n",
        "servers mount, NAME-apiserver-keys (sa.key, sa.pub). Importing the same key again changes nothing;\n",
        "a Secret that holds a different key is refused (exit 2)."
    ))]
    Import {
        /// The rotation (the KSASigningKeyRotation resource, the user
        /// cluster's name) the key belongs to.
        #[arg(long, value_name = "NAME")]
        rotation: String,
        /// The rotation's namespace; default: the kubeconfig context's.
        #[arg(long, short = 'n', value_name = "NAMESPACE", add = ArgValueCompleter::new(complete_namespace))]
        namespace: Option<String>,
        /// The private key (PEM) the cluster signs with; - for stdin.
        #[arg(long, value_name = "FILE")]
        key: String,
        /// The key version to store it as (`--version` is ksa's own).
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        key_version: u64,
        /// The Secret (in the rotation's namespace, data key `value`)
        /// holding the kubeconfig of the user cluster whose API servers
        /// sign with the key, as the config's `kubeconfigSecret`. Default:
        /// the rotation resource's, if it exists; else the cluster
        /// --kubeconfig names.
        #[arg(long, value_name = "NAME")]
        kubeconfig_secret: Option<String>,
        #[command(flatten)]
        kube: KubeArgs,
        /// Output format: text, json, yaml or jsonpath=TEMPLATE (the
        /// Secrets, the kid, the instances asked and whether anything
        /// changed).
        #[arg(long, short = 'o', value_name = "FORMAT", default_value = "text", value_parser = TEXT_OR_DATA)]
        output: Output,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Show a token's header and claims without verifying it.
    #[command(after_help = "Example:\n  kubectl create token default | ksa token decode -")]
    Decode {
        /// The token, or - for stdin.
        token: Option<String>,
        /// Output format: json, yaml or jsonpath=TEMPLATE.
        #[arg(long, short = 'o', value_name = "FORMAT", default_value = "json", value_parser = DATA_ONLY)]
        output: Output,
    },
    /// Verify a token against keys; exit 0 when valid, 1 when not, 4 when it
    /// could not be checked.
    #[command(after_help = concat!(
        "Examples:\n",
        "  kubectl get --raw /openid/v1/jwks > jwks.json\n",
        "  kubectl create token app | ksa token verify - --jwks jwks.json --issuer https://kubernetes.default.svc.cluster.local\n",
        "  ksa token verify \"$TOKEN\" --public-key sa.pub --at 2026-01-01T00:00:00Z -o json\n",
        "  ksa token verify \"$TOKEN\" --rotation user-cluster-1 -n user-cluster-1 --kubeconfig admin.kubeconfig\n\n",
        "keyVersion (json, yaml; `key version:` in text) is the rotation's version of the key that\n",
        "verified the token when ksa knows it: from --rotation, from a --public-key file named\n",
        "sa-vN.pub or sa-vN.key, or from another key of the same kid that has one. A JWKS names kids\n",
        "only: with --jwks alone it is null."
    ))]
    Verify {
        /// The token, or - for stdin.
        token: Option<String>,
        /// A JWKS file or http(s) URL. A URL gets 10 s to connect and 30 s
        /// in all, at most 1 MiB, and redirects only within its own scheme,
        /// host and port; when it cannot be fetched, ksa exits 4.
        #[arg(long)]
        jwks: Vec<String>,
        /// A PEM file of public (or private) keys. Named as ksa names key
        /// versions in a kubeadm pki directory (sa-v2.pub, sa-v2.key), its
        /// keys are of that version.
        #[arg(long = "public-key")]
        public_key: Vec<PathBuf>,
        /// The rotation (KSASigningKeyRotation) whose key Secrets say each
        /// key's version, read from the admin cluster; with no --jwks or
        /// --public-key, its keys are the keys trusted.
        #[arg(long, value_name = "NAME")]
        rotation: Option<String>,
        /// The rotation's namespace, with --rotation; default: the
        /// kubeconfig context's.
        #[arg(long, short = 'n', value_name = "NAMESPACE", requires = "rotation", add = ArgValueCompleter::new(complete_namespace))]
        namespace: Option<String>,
        #[command(flatten)]
        kube: KubeArgs,
        /// Accepted issuer; repeat for several. None: any issuer.
        #[arg(long)]
        issuer: Vec<String>,
        /// Accepted audience; repeat for several. None: not checked.
        #[arg(long)]
        audience: Vec<String>,
        /// Verify as of this time: RFC 3339 or seconds since the epoch.
        #[arg(long)]
        at: Option<String>,
        /// Accept a token with no exp claim that is not a legacy token (it
        /// would be valid forever); refused by default.
        #[arg(long)]
        allow_no_exp: bool,
        /// Output format: text (the verdict for people), json, yaml or
        /// jsonpath=TEMPLATE (`-o jsonpath={.keyVersion}`).
        #[arg(long, short = 'o', value_name = "FORMAT", default_value = "text", value_parser = TEXT_OR_DATA)]
        output: Output,
    },
    /// Mint a legacy or bound token from a private key, for recovery and tests.
    #[command(after_help = concat!(
        "Examples:\n",
        "  ksa token mint --key sa.key legacy --namespace default --service-account app --uid 6f1c... --secret app-token\n",
        "  ksa token mint --key sa.key bound --issuer https://kubernetes.default.svc.cluster.local --audience vault --namespace default --service-account app --uid 6f1c... --expiration 1h"
    ))]
    Mint {
        /// The private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// text: the token alone; json or yaml: the token with its kid and
        /// expiry; or jsonpath=TEMPLATE over the json.
        #[arg(long, short = 'o', value_name = "FORMAT", default_value = "text", value_parser = TEXT_OR_DATA, global = true)]
        output: Output,
        #[command(subcommand)]
        kind: MintKind,
    },
}

#[derive(Subcommand, Debug)]
pub enum MintKind {
    /// A legacy (Secret) token: no expiry.
    Legacy {
        /// The service account's namespace.
        #[arg(long)]
        namespace: String,
        /// The service account's name.
        #[arg(long)]
        service_account: String,
        /// The service account's UID (`kubectl get sa NAME -o
        /// jsonpath='{.metadata.uid}'`).
        #[arg(long)]
        uid: String,
        /// The Secret the token is for.
        #[arg(long)]
        secret: String,
    },
    /// A bound token, as TokenRequest issues.
    Bound {
        /// The token's issuer (iss): the API servers'
        /// --service-account-issuer.
        #[arg(long)]
        issuer: String,
        /// An audience (aud) of the token; repeat for several.
        #[arg(long, required = true)]
        audience: Vec<String>,
        /// The service account's namespace.
        #[arg(long)]
        namespace: String,
        /// The service account's name.
        #[arg(long)]
        service_account: String,
        /// The service account's UID (`kubectl get sa NAME -o
        /// jsonpath='{.metadata.uid}'`).
        #[arg(long)]
        uid: String,
        /// Lifetime, at least 10m (e.g. 1h).
        #[arg(long, default_value = "1h")]
        expiration: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Every flag and argument of every command, hidden ones included, as
    /// `PATH: --flag`, that `--help` would show with no text.
    fn without_help(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                let name = arg
                    .get_long()
                    .map(|long| format!("--{long}"))
                    .unwrap_or_else(|| arg.get_id().to_string());
                missing.push(format!("{path}: {name}"));
            }
        }
        for sub in command.get_subcommands() {
            without_help(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }

    #[test]
    fn every_flag_of_every_command_has_help() {
        let mut command = super::Cli::command();
        command.build();
        let mut missing = Vec::new();
        without_help(&command, "ksa", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
