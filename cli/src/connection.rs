//! Reaching a cluster as kubectl does: `--kubeconfig`, else the files of
//! `KUBECONFIG` merged in order (the first file to set a field wins), else
//! `~/.kube/config`, else the in-cluster service account; `--context`, else
//! the kubeconfig's `current-context`; `--request-timeout` in kubectl's
//! forms (`0` for none, `30s`, `1m`, a bare number of seconds).
//!
//! A [`Connection`] remembers where its settings came from, so that an
//! error reaching the API server names the server URL, the context and the
//! kubeconfig file.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::Failure;
use crate::args::KubeArgs;

/// Where the kubeconfig comes from, in kubectl's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigSource {
    /// `--kubeconfig`.
    Flag(PathBuf),
    /// `KUBECONFIG`: its files, merged in order.
    Env(Vec<PathBuf>),
    /// `~/.kube/config`.
    Home(PathBuf),
    /// No kubeconfig: the pod's service account.
    InCluster,
}

impl std::fmt::Display for KubeconfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KubeconfigSource::Flag(path) | KubeconfigSource::Home(path) => {
                write!(f, "{}", path.display())
            }
            KubeconfigSource::Env(paths) => {
                let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(f, "{} (from $KUBECONFIG)", paths.join(", "))
            }
            KubeconfigSource::InCluster => f.write_str("none (in-cluster service account)"),
        }
    }
}

/// The kubeconfig to use: the flag, else `KUBECONFIG` (its non-empty
/// entries), else `~/.kube/config` when it exists, else in-cluster when
/// running in a pod.
pub fn kubeconfig_source(
    flag: Option<&Path>,
    env: Option<&OsStr>,
    home: Option<&Path>,
    in_cluster: bool,
) -> Option<KubeconfigSource> {
    if let Some(path) = flag {
        return Some(KubeconfigSource::Flag(path.to_owned()));
    }
    if let Some(value) = env {
        let paths: Vec<PathBuf> = std::env::split_paths(value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return Some(KubeconfigSource::Env(paths));
        }
    }
    if let Some(home) = home {
        let path = home.join(".kube").join("config");
        if path.exists() {
            return Some(KubeconfigSource::Home(path));
        }
    }
    in_cluster.then_some(KubeconfigSource::InCluster)
}

/// The context names of the kubeconfig kubectl would read with no
/// `--kubeconfig` (the files of `KUBECONFIG`, else `~/.kube/config`), for
/// completion: nothing when there is none or it does not parse.
pub fn context_names() -> Vec<String> {
    let source = kubeconfig_source(
        None,
        std::env::var_os("KUBECONFIG").as_deref(),
        std::env::home_dir().as_deref(),
        false,
    );
    let paths = match source {
        Some(KubeconfigSource::Env(paths)) => paths,
        Some(KubeconfigSource::Home(path) | KubeconfigSource::Flag(path)) => vec![path],
        Some(KubeconfigSource::InCluster) | None => Vec::new(),
    };
    let mut names: Vec<String> = Vec::new();
    for path in paths.iter().filter(|path| path.exists()) {
        let Ok(kubeconfig) = read(path) else { continue };
        for context in kubeconfig.contexts {
            if !names.contains(&context.name) {
                names.push(context.name);
            }
        }
    }
    names
}

/// The namespaces of the cluster the default context names, for
/// completion: asked with a deadline of `limit`, nothing when the cluster
/// does not answer in time or refuses.
pub fn namespace_names(limit: Duration) -> Vec<String> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime.block_on(async {
        let list = async {
            let args = KubeArgs {
                request_timeout: format!("{}s", limit.as_secs().max(1)),
                ..KubeArgs::default()
            };
            let connection = Connection::open(&args).await.ok()?;
            let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
                kube::Api::all(connection.client);
            let list = api
                .list_metadata(&kube::api::ListParams::default())
                .await
                .ok()?;
            Some(
                list.items
                    .into_iter()
                    .filter_map(|namespace| namespace.metadata.name)
                    .collect::<Vec<_>>(),
            )
        };
        tokio::time::timeout(limit, list)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    })
}

/// `--request-timeout` in kubectl's forms: `0` (no limit), a bare number of
/// seconds, or a duration such as `30s`, `1m` or `1h30m`.
pub fn request_timeout(text: &str) -> Result<Option<Duration>, Failure> {
    let text = text.trim();
    let timeout = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => crate::input::duration(text, "--request-timeout")?,
    };
    Ok((!timeout.is_zero()).then_some(timeout))
}

/// A client, and what it was made from.
#[derive(Clone)]
pub struct Connection {
    pub client: kube::Client,
    pub config: kube::Config,
    /// The context used; `None` in-cluster.
    pub context: Option<String>,
    pub source: KubeconfigSource,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Connection {
    /// Builds the client the flags and the environment describe. Nothing
    /// is sent yet.
    pub async fn open(args: &KubeArgs) -> Result<Connection, Failure> {
        let timeout = request_timeout(&args.request_timeout)?;
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let source = kubeconfig_source(
            args.kubeconfig.as_deref(),
            std::env::var_os("KUBECONFIG").as_deref(),
            std::env::home_dir().as_deref(),
            in_cluster,
        )
        .ok_or_else(|| {
            Failure::bad_input(anyhow::anyhow!(
                "no --kubeconfig given and none found in $KUBECONFIG or ~/.kube/config"
            ))
        })?;
        let (mut config, context) = match &source {
            KubeconfigSource::InCluster => {
                if args.context.is_some() {
                    return Err(Failure::bad_input(anyhow::anyhow!(
                        "--context needs a kubeconfig: pass --kubeconfig or set $KUBECONFIG"
                    )));
                }
                let config = kube::Config::incluster()
                    .context("reading the in-cluster service account")
                    .map_err(Failure::bad_input)?;
                (config, None)
            }
            KubeconfigSource::Flag(path) | KubeconfigSource::Home(path) => {
                let kubeconfig = read(path)?;
                from_kubeconfig(kubeconfig, args.context.as_deref(), &source).await?
            }
            KubeconfigSource::Env(paths) => {
                let mut merged = Kubeconfig::default();
                for path in paths {
                    // kubectl skips a listed file that does not exist.
                    if !path.exists() {
                        continue;
                    }
                    merged = merged
                        .merge(read(path)?)
                        .with_context(|| format!("merging {}", path.display()))
                        .map_err(Failure::bad_input)?;
                }
                from_kubeconfig(merged, args.context.as_deref(), &source).await?
            }
        };
        if let Some(timeout) = timeout {
            config.connect_timeout = Some(timeout);
            config.read_timeout = Some(timeout);
            config.write_timeout = Some(timeout);
        }
        let client = kube::Client::try_from(config.clone()).with_context(|| {
            format!(
                "configuring a client for {}",
                describe(&config, &context, &source)
            )
        })?;
        Ok(Connection {
            client,
            config,
            context,
            source,
        })
    }

    /// `the API server https://... (context admin, kubeconfig /path)`.
    pub fn describe(&self) -> String {
        describe(&self.config, &self.context, &self.source)
    }

    /// Asks the API server its version: the first request, whose failure
    /// says which server, context and kubeconfig were tried.
    pub async fn check(&self) -> Result<(), Failure> {
        self.client
            .apiserver_version()
            .await
            .map_err(|error| self.unreachable(error))?;
        Ok(())
    }

    /// An error of a request, with the server, context and kubeconfig.
    pub fn unreachable(&self, error: kube::Error) -> Failure {
        let what = match &error {
            kube::Error::Api(status) if status.code == 401 => "refused the credentials of",
            kube::Error::Api(_) => "answered with an error at",
            _ => "could not be reached at",
        };
        Failure::from(
            anyhow::Error::new(error).context(format!("the API server {what} {}", self.describe())),
        )
    }
}

fn describe(config: &kube::Config, context: &Option<String>, source: &KubeconfigSource) -> String {
    let context = context.as_deref().unwrap_or("none");
    format!(
        "{} (context {context}, kubeconfig {source})",
        config.cluster_url
    )
}

/// A kubeconfig file, refused when larger than ksa reads (so that
/// `/dev/zero` fails at once). In a regular file, relative file paths are
/// resolved against its directory, as kubectl does; a pipe
/// (`--kubeconfig <(...)`) is read once and taken as it is.
fn read(path: &Path) -> Result<Kubeconfig, Failure> {
    let context = || format!("kubeconfig {}", path.display());
    let bytes = crate::input::read_limited(path, crate::input::MAX_INPUT)
        .with_context(context)
        .map_err(Failure::bad_input)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("not UTF-8 text"))
        .with_context(context)
        .map_err(Failure::bad_input)?;
    let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    let kubeconfig = if regular {
        Kubeconfig::read_from(path)
    } else {
        Kubeconfig::from_yaml(text)
    };
    kubeconfig.with_context(context).map_err(Failure::bad_input)
}

/// The config of `context` (or the current context), and the context's name.
async fn from_kubeconfig(
    kubeconfig: Kubeconfig,
    context: Option<&str>,
    source: &KubeconfigSource,
) -> Result<(kube::Config, Option<String>), Failure> {
    let name = context
        .map(str::to_owned)
        .or_else(|| kubeconfig.current_context.clone());
    if let Some(name) = &name
        && !kubeconfig.contexts.iter().any(|c| &c.name == name)
    {
        let known: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(Failure::bad_input(anyhow::anyhow!(
            "kubeconfig {source} has no context {name:?}; it has: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    let options = KubeConfigOptions {
        context: name.clone(),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("kubeconfig {source}"))
        .map_err(Failure::bad_input)?;
    Ok((config, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_kubeconfig_then_home_then_in_cluster() {
        let home = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(home.path().join(".kube")).expect("dir");
        std::fs::write(home.path().join(".kube/config"), "").expect("file");
        let flag = Path::new("/flag/kubeconfig");
        let env = OsStr::new("/a/config::/b/config");
        assert_eq!(
            kubeconfig_source(Some(flag), Some(env), Some(home.path()), true),
            Some(KubeconfigSource::Flag(flag.to_owned()))
        );
        assert_eq!(
            kubeconfig_source(None, Some(env), Some(home.path()), true),
            Some(KubeconfigSource::Env(vec![
                PathBuf::from("/a/config"),
                PathBuf::from("/b/config")
            ]))
        );
        // An empty KUBECONFIG is as if unset.
        assert_eq!(
            kubeconfig_source(None, Some(OsStr::new("")), Some(home.path()), true),
            Some(KubeconfigSource::Home(home.path().join(".kube/config")))
        );
        let no_home = tempfile::tempdir().expect("temp dir");
        assert_eq!(
            kubeconfig_source(None, None, Some(no_home.path()), true),
            Some(KubeconfigSource::InCluster)
        );
        assert_eq!(
            kubeconfig_source(None, None, Some(no_home.path()), false),
            None
        );
    }

    #[test]
    fn request_timeouts_take_kubectls_forms() {
        assert_eq!(request_timeout("0").expect("0"), None);
        assert_eq!(request_timeout("0s").expect("0s"), None);
        assert_eq!(
            request_timeout("30s").expect("30s"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            request_timeout("1m").expect("1m"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            request_timeout("5").expect("5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            request_timeout("1m30s").expect("1m30s"),
            Some(Duration::from_secs(90))
        );
        assert!(request_timeout("soon").is_err());
        assert!(request_timeout("-1s").is_err());
    }

    fn kubeconfig(dir: &Path, name: &str, current: &str, contexts: &[(&str, &str)]) -> PathBuf {
        let mut text =
            format!("apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n");
        for (context, server) in contexts {
            text.push_str(&format!(
                "- name: {context}\n  cluster: {{server: \"{server}\"}}\n"
            ));
        }
        text.push_str("users:\n");
        for (context, _) in contexts {
            text.push_str(&format!("- name: {context}\n  user: {{token: t}}\n"));
        }
        text.push_str("contexts:\n");
        for (context, _) in contexts {
            text.push_str(&format!(
                "- name: {context}\n  context: {{cluster: {context}, user: {context}}}\n"
            ));
        }
        let path = dir.join(name);
        std::fs::write(&path, text).expect("written");
        path
    }

    #[tokio::test]
    async fn a_context_is_chosen_by_flag_or_current_context_across_merged_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = kubeconfig(dir.path(), "a", "one", &[("one", "https://one.example")]);
        let b = kubeconfig(dir.path(), "b", "two", &[("two", "https://two.example")]);
        let source = KubeconfigSource::Env(vec![a.clone(), b.clone()]);
        let mut merged = Kubeconfig::default();
        for path in [&a, &b] {
            merged = merged.merge(read(path).expect("reads")).expect("merges");
        }
        // The first file's current-context wins.
        let (config, context) = from_kubeconfig(merged.clone(), None, &source)
            .await
            .expect("config");
        assert_eq!(context.as_deref(), Some("one"));
        assert_eq!(config.cluster_url.to_string(), "https://one.example/");
        let (config, context) = from_kubeconfig(merged.clone(), Some("two"), &source)
            .await
            .expect("config");
        assert_eq!(context.as_deref(), Some("two"));
        assert_eq!(config.cluster_url.to_string(), "https://two.example/");
        let error = from_kubeconfig(merged, Some("three"), &source)
            .await
            .expect_err("no such context");
        assert_eq!(
            error.error.to_string(),
            format!(
                "kubeconfig {} (from $KUBECONFIG) has no context \"three\"; it has: one, two",
                [a.display().to_string(), b.display().to_string()].join(", ")
            )
        );
    }
}
