//! The user cluster's kubeconfig, as a rotation's Secret holds it, reduced
//! to an allow-list of inline fields before any of it reaches kube-rs.
//!
//! kube-rs honours everything a kubeconfig can say: an `exec` plugin or an
//! `auth-provider` runs a command inside the controller, `tokenFile` and
//! the file forms of certificates and keys read the controller's own
//! files, `as` impersonates, `proxy-url` sends its requests elsewhere. The
//! Secret is written by whoever may write Secrets in a rotation's
//! namespace, who must not get the controller's cluster-wide powers. So
//! the kubeconfig is parsed here (kube's `Kubeconfig` type: parsing runs
//! nothing), every entry is checked, any field outside the allow-list is
//! refused by name, and the `kube::Config` is built by hand from the
//! inline fields alone: no kube-rs code path that runs a command or reads
//! a file is ever reached.
//!
//! Accepted: an `https` `server`, `certificate-authority-data` (or none:
//! the system's roots), `tls-server-name`, and for the user either
//! `client-certificate-data` with `client-key-data`, or `token`.
//!
//! Errors name fields and entries by position, never values: the Secret's
//! content appears in no error, log, Event or status.

use base64::Engine as _;
use kube::config::{AuthInfo, Cluster, Kubeconfig};
use secrecy::ExposeSecret as _;

/// The largest kubeconfig read (a Secret holds at most 1 MiB anyway).
pub const MAX_KUBECONFIG_BYTES: usize = 1 << 20;

/// What is wrong with a kubeconfig. Names fields, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KubeconfigProblem {
    #[error("the Secret has no data key {key:?}; set spec.cluster.kubeconfigSecret.key")]
    MissingDataKey { key: String },
    #[error("it is larger than {MAX_KUBECONFIG_BYTES} bytes")]
    TooLarge,
    #[error("it is not UTF-8 text")]
    NotUtf8,
    #[error("it is not a kubeconfig: YAML that does not parse as one{}", at_line(.line))]
    NotKubeconfig {
        /// Where the parser stopped (1-based), when it knows.
        line: Option<usize>,
    },
    #[error("it names no `current-context` and does not have exactly one context")]
    NoCurrentContext,
    #[error("its `current-context` names no context in `contexts`")]
    UndefinedContext,
    #[error("its current context has no `user`; ksa needs inline credentials")]
    NoUser,
    #[error("its current context's {what} is not defined in `{list}`")]
    Undefined {
        what: &'static str,
        list: &'static str,
    },
    #[error("`{field}` in {place} is not allowed: {why}")]
    Forbidden {
        field: &'static str,
        place: String,
        why: &'static str,
    },
    #[error(
        "{place} has fields ksa does not accept; allowed in a cluster: server, \
         certificate-authority-data, tls-server-name, disable-compression, extensions; \
         in a user: client-certificate-data, client-key-data, token, extensions"
    )]
    UnknownFields { place: String },
    #[error("the `server` of the current context's cluster is missing")]
    NoServer,
    #[error("`server` in {place} is not an https:// URL")]
    NotHttps { place: String },
    #[error(
        "the current context's user has no credentials; give client-certificate-data and \
         client-key-data, or token"
    )]
    NoCredentials,
    #[error(
        "the current context's user has both a client certificate and a token; give one of them"
    )]
    TwoCredentials,
    #[error("the current context's user has {present} without {missing}")]
    HalfClientCertificate {
        present: &'static str,
        missing: &'static str,
    },
    #[error("`{field}` in {place} is not {what}")]
    Malformed {
        field: &'static str,
        place: String,
        what: &'static str,
    },
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// A kubeconfig that passed the allow-list: the current context's server,
/// CA and inline credentials, nothing else.
#[derive(Clone)]
pub struct InlineKubeconfig {
    server: http::Uri,
    /// DER certificates from `certificate-authority-data`; none: the
    /// system's roots.
    root_certs: Option<Vec<Vec<u8>>>,
    tls_server_name: Option<String>,
    /// Holds only `client-certificate-data` and `client-key-data`, or
    /// `token`.
    user: AuthInfo,
}

impl std::fmt::Debug for InlineKubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineKubeconfig")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl InlineKubeconfig {
    /// Parses and checks a kubeconfig. Every cluster and user entry is
    /// checked, not only the current context's, so that a kubeconfig is
    /// either wholly inline or refused.
    pub fn parse(bytes: &[u8]) -> Result<InlineKubeconfig, KubeconfigProblem> {
        if bytes.len() > MAX_KUBECONFIG_BYTES {
            return Err(KubeconfigProblem::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| KubeconfigProblem::NotUtf8)?;
        // kube's own parser (serde-saphyr, with its budget against alias
        // bombs); several documents are merged as kubectl merges files. Its
        // message quotes the input: only its position is kept.
        let kubeconfig =
            Kubeconfig::from_yaml(text).map_err(|e| KubeconfigProblem::NotKubeconfig {
                line: match e {
                    kube::config::KubeconfigError::Parse(e) => {
                        e.location().and_then(|l| usize::try_from(l.line()).ok())
                    }
                    _ => None,
                },
            })?;
        for (i, named) in kubeconfig.clusters.iter().enumerate() {
            if let Some(cluster) = &named.cluster {
                check_cluster(cluster, &format!("clusters[{i}].cluster"))?;
            }
        }
        for (i, named) in kubeconfig.auth_infos.iter().enumerate() {
            if let Some(user) = &named.auth_info {
                check_user(user, &format!("users[{i}].user"))?;
            }
        }

        let context = match &kubeconfig.current_context {
            Some(name) => kubeconfig
                .contexts
                .iter()
                .find(|c| &c.name == name)
                .ok_or(KubeconfigProblem::UndefinedContext)?,
            None => match kubeconfig.contexts.as_slice() {
                [only] => only,
                _ => return Err(KubeconfigProblem::NoCurrentContext),
            },
        };
        let context = context
            .context
            .as_ref()
            .ok_or(KubeconfigProblem::UndefinedContext)?;
        let (cluster_index, cluster) = kubeconfig
            .clusters
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == context.cluster)
            .and_then(|(i, c)| Some((i, c.cluster.as_ref()?)))
            .ok_or(KubeconfigProblem::Undefined {
                what: "cluster",
                list: "clusters",
            })?;
        let user_name = context.user.as_ref().ok_or(KubeconfigProblem::NoUser)?;
        let (user_index, user) = kubeconfig
            .auth_infos
            .iter()
            .enumerate()
            .find(|(_, u)| &u.name == user_name)
            .and_then(|(i, u)| Some((i, u.auth_info.as_ref()?)))
            .ok_or(KubeconfigProblem::Undefined {
                what: "user",
                list: "users",
            })?;

        let place = format!("clusters[{cluster_index}].cluster");
        let server = cluster
            .server
            .as_deref()
            .ok_or(KubeconfigProblem::NoServer)?;
        let server = https_url(server, &place)?;
        let root_certs = match &cluster.certificate_authority_data {
            Some(data) => Some(certificates(data, "certificate-authority-data", &place)?),
            None => None,
        };
        Ok(InlineKubeconfig {
            server,
            root_certs,
            tls_server_name: cluster.tls_server_name.clone(),
            user: credentials(user, &format!("users[{user_index}].user"))?,
        })
    }

    /// The client configuration: built field by field, so nothing but the
    /// checked inline fields reaches kube-rs.
    pub fn to_config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.server.clone());
        config.root_cert = self.root_certs.clone();
        config.tls_server_name = self.tls_server_name.clone();
        config.auth_info = self.user.clone();
        // A server that accepts a request and never answers it must not
        // hold a reconcile (or `keys import`) for ever.
        config.read_timeout = Some(READ_TIMEOUT);
        config
    }
}

/// How long a request to a user cluster may wait for each read of its
/// answer.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why each refused cluster field is refused.
const CA_FILE: &str = "it reads a file of the controller; give certificate-authority-data";
const PROXY: &str = "it sends the controller's requests through another host";
const INSECURE: &str = "it turns off the server certificate check; give certificate-authority-data";

fn check_cluster(cluster: &Cluster, place: &str) -> Result<(), KubeconfigProblem> {
    let forbidden = |field, why| KubeconfigProblem::Forbidden {
        field,
        place: place.to_owned(),
        why,
    };
    if cluster.certificate_authority.is_some() {
        return Err(forbidden("certificate-authority", CA_FILE));
    }
    if cluster.proxy_url.is_some() {
        return Err(forbidden("proxy-url", PROXY));
    }
    if cluster.insecure_skip_tls_verify == Some(true) {
        return Err(forbidden("insecure-skip-tls-verify", INSECURE));
    }
    if !cluster.other.is_empty() {
        return Err(KubeconfigProblem::UnknownFields {
            place: place.to_owned(),
        });
    }
    if let Some(server) = &cluster.server {
        https_url(server, place)?;
    }
    Ok(())
}

/// Why each refused user field is refused.
const RUNS: &str = "it runs a command inside the controller";
const READS: &str = "it reads a file of the controller; give the -data form inline";
const IMPERSONATES: &str =
    "impersonation is not accepted; give the credentials of the identity itself";
const BASIC: &str = "basic authentication is not accepted; give a token or a client certificate";

fn check_user(user: &AuthInfo, place: &str) -> Result<(), KubeconfigProblem> {
    let refused: [(&'static str, bool, &'static str); 11] = [
        ("exec", user.exec.is_some(), RUNS),
        ("auth-provider", user.auth_provider.is_some(), RUNS),
        ("tokenFile", user.token_file.is_some(), READS),
        (
            "client-certificate",
            user.client_certificate.is_some(),
            READS,
        ),
        ("client-key", user.client_key.is_some(), READS),
        ("username", user.username.is_some(), BASIC),
        ("password", user.password.is_some(), BASIC),
        ("as", user.impersonate.is_some(), IMPERSONATES),
        ("as-uid", user.impersonate_uid.is_some(), IMPERSONATES),
        ("as-groups", user.impersonate_groups.is_some(), IMPERSONATES),
        (
            "as-user-extra",
            user.impersonate_user_extra.is_some(),
            IMPERSONATES,
        ),
    ];
    if let Some((field, _, why)) = refused.into_iter().find(|(_, present, _)| *present) {
        return Err(KubeconfigProblem::Forbidden {
            field,
            place: place.to_owned(),
            why,
        });
    }
    if !user.other.is_empty() {
        return Err(KubeconfigProblem::UnknownFields {
            place: place.to_owned(),
        });
    }
    Ok(())
}

/// The checked user's credentials, alone in a fresh `AuthInfo`.
fn credentials(user: &AuthInfo, place: &str) -> Result<AuthInfo, KubeconfigProblem> {
    let mut only = AuthInfo::default();
    match (
        &user.client_certificate_data,
        &user.client_key_data,
        &user.token,
    ) {
        (Some(_), Some(_), Some(_)) => Err(KubeconfigProblem::TwoCredentials),
        (Some(certificate), Some(key), None) => {
            certificates(certificate, "client-certificate-data", place)?;
            private_key(key.expose_secret(), place)?;
            only.client_certificate_data = Some(certificate.clone());
            only.client_key_data = Some(key.clone());
            Ok(only)
        }
        (Some(_), None, _) => Err(KubeconfigProblem::HalfClientCertificate {
            present: "client-certificate-data",
            missing: "client-key-data",
        }),
        (None, Some(_), _) => Err(KubeconfigProblem::HalfClientCertificate {
            present: "client-key-data",
            missing: "client-certificate-data",
        }),
        (None, None, Some(token)) => {
            let usable = !token.expose_secret().is_empty()
                && token.expose_secret().bytes().all(|b| b.is_ascii_graphic());
            if !usable {
                return Err(KubeconfigProblem::Malformed {
                    field: "token",
                    place: place.to_owned(),
                    what: "a bearer token (visible ASCII, not empty)",
                });
            }
            only.token = Some(token.clone());
            Ok(only)
        }
        (None, None, None) => Err(KubeconfigProblem::NoCredentials),
    }
}

fn https_url(server: &str, place: &str) -> Result<http::Uri, KubeconfigProblem> {
    let not_https = || KubeconfigProblem::NotHttps {
        place: place.to_owned(),
    };
    let uri: http::Uri = server.parse().map_err(|_| not_https())?;
    if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
        return Err(not_https());
    }
    Ok(uri)
}

fn decode(data: &str, field: &'static str, place: &str) -> Result<Vec<u8>, KubeconfigProblem> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| KubeconfigProblem::Malformed {
            field,
            place: place.to_owned(),
            what: "base64",
        })
}

/// The DER certificates of a base64 PEM bundle; at least one.
fn certificates(
    data: &str,
    field: &'static str,
    place: &str,
) -> Result<Vec<Vec<u8>>, KubeconfigProblem> {
    let not_pem = || KubeconfigProblem::Malformed {
        field,
        place: place.to_owned(),
        what: "base64 of PEM certificates",
    };
    let pem = decode(data, field, place)?;
    let certificates: Vec<Vec<u8>> = pem::parse_many(&pem)
        .map_err(|_| not_pem())?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certificates.is_empty() {
        return Err(not_pem());
    }
    Ok(certificates)
}

/// Checks that `client-key-data` is base64 of one PEM private key.
fn private_key(data: &str, place: &str) -> Result<(), KubeconfigProblem> {
    const FIELD: &str = "client-key-data";
    let pem = zeroize::Zeroizing::new(decode(data, FIELD, place)?);
    let is_key = pem::parse_many(pem.as_slice()).ok().is_some_and(|blocks| {
        blocks.len() == 1 && blocks.iter().all(|p| p.tag().ends_with("PRIVATE KEY"))
    });
    if !is_key {
        return Err(KubeconfigProblem::Malformed {
            field: FIELD,
            place: place.to_owned(),
            what: "base64 of one PEM private key",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIBAA==\n-----END PRIVATE KEY-----\n";

    /// A kubeconfig with this cluster and user (YAML mappings, indented
    /// for their place).
    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
{cluster}
users:
- name: u
  user:
{user}
contexts:
- name: x
  context: {{cluster: c, user: u}}
current-context: x
"
        )
    }

    fn good_cluster() -> String {
        format!(
            "    server: https://10.0.0.1:6443\n    certificate-authority-data: {}",
            b64(CERT)
        )
    }

    fn good_user() -> String {
        format!(
            "    client-certificate-data: {}\n    client-key-data: {}",
            b64(CERT),
            b64(KEY)
        )
    }

    fn parse(text: &str) -> Result<InlineKubeconfig, KubeconfigProblem> {
        InlineKubeconfig::parse(text.as_bytes())
    }

    #[test]
    fn an_inline_client_certificate_kubeconfig_is_accepted() {
        let parsed = parse(&kubeconfig(&good_cluster(), &good_user())).expect("accepted");
        let config = parsed.to_config();
        assert_eq!(config.cluster_url.host(), Some("10.0.0.1"));
        assert_eq!(config.cluster_url.scheme_str(), Some("https"));
        assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
        assert!(config.root_cert_file.is_none());
        assert!(config.proxy_url.is_none());
        assert!(!config.accept_invalid_certs);
        // A silent user cluster cannot hold a request for ever (hostile
        // read of issue 33: it held the reconcile until /livez restarted
        // the controller).
        assert_eq!(config.read_timeout, Some(super::READ_TIMEOUT));
        let user = &config.auth_info;
        assert!(user.client_certificate_data.is_some() && user.client_key_data.is_some());
        assert!(user.exec.is_none() && user.auth_provider.is_none());
        assert!(user.token.is_none() && user.token_file.is_none());
        assert!(user.client_certificate.is_none() && user.client_key.is_none());
    }

    #[test]
    fn an_inline_token_kubeconfig_without_a_ca_is_accepted() {
        let parsed = parse(&kubeconfig(
            "    server: https://api.example:443",
            "    token: abc.def-ghi",
        ))
        .expect("accepted");
        let config = parsed.to_config();
        assert!(config.root_cert.is_none());
        assert_eq!(
            config.auth_info.token.as_ref().map(|t| t.expose_secret()),
            Some("abc.def-ghi")
        );
    }

    #[test]
    fn every_field_that_runs_reads_or_impersonates_is_refused_by_name() {
        let user_fields = [
            (
                "exec",
                "    exec: {apiVersion: client.authentication.k8s.io/v1, command: id}",
            ),
            (
                "auth-provider",
                "    auth-provider: {name: gcp, config: {cmd-path: id}}",
            ),
            ("tokenFile", "    tokenFile: /var/run/secrets/token"),
            ("client-certificate", "    client-certificate: /etc/cert"),
            ("client-key", "    client-key: /etc/key"),
            ("username", "    username: admin"),
            ("password", "    password: secret"),
            ("as", "    as: system:admin"),
            ("as-uid", "    as-uid: \"0\""),
            ("as-groups", "    as-groups: [system:masters]"),
            ("as-user-extra", "    as-user-extra: {scopes: [all]}"),
        ];
        for (field, line) in user_fields {
            let text = kubeconfig(&good_cluster(), &format!("{}\n{line}", good_user()));
            assert_eq!(
                parse(&text).expect_err("refused"),
                KubeconfigProblem::Forbidden {
                    field,
                    place: "users[0].user".into(),
                    why: match field {
                        "exec" | "auth-provider" => RUNS,
                        "tokenFile" | "client-certificate" | "client-key" => READS,
                        "username" | "password" => BASIC,
                        _ => IMPERSONATES,
                    },
                },
                "{field}"
            );
        }
        let cluster_fields = [
            (
                "certificate-authority",
                "    certificate-authority: /etc/ca.crt",
                CA_FILE,
            ),
            ("proxy-url", "    proxy-url: socks5://evil:1080", PROXY),
            (
                "insecure-skip-tls-verify",
                "    insecure-skip-tls-verify: true",
                INSECURE,
            ),
        ];
        for (field, line, why) in cluster_fields {
            let text = kubeconfig(&format!("{}\n{line}", good_cluster()), &good_user());
            assert_eq!(
                parse(&text).expect_err("refused"),
                KubeconfigProblem::Forbidden {
                    field,
                    place: "clusters[0].cluster".into(),
                    why,
                },
                "{field}"
            );
        }
    }

    #[test]
    fn an_exec_plugin_in_a_user_the_context_does_not_use_is_refused_too() {
        let text = kubeconfig(&good_cluster(), &good_user()).replace(
            "users:\n- name: u",
            "users:\n- name: other\n  user:\n    exec: {command: id}\n- name: u",
        );
        let problem = parse(&text).expect_err("refused");
        assert!(
            matches!(&problem, KubeconfigProblem::Forbidden { field: "exec", place, .. } if place == "users[0].user"),
            "{problem:?}"
        );
    }

    #[test]
    fn a_plain_http_server_is_refused() {
        let text = kubeconfig("    server: http://10.0.0.1:8080", "    token: abc");
        assert_eq!(
            parse(&text).expect_err("refused"),
            KubeconfigProblem::NotHttps {
                place: "clusters[0].cluster".into()
            }
        );
    }

    #[test]
    fn unknown_fields_are_refused_without_quoting_them() {
        let text = kubeconfig(
            &good_cluster(),
            &format!("{}\n    canary-1234: x", good_user()),
        );
        let problem = parse(&text).expect_err("refused");
        assert_eq!(
            problem,
            KubeconfigProblem::UnknownFields {
                place: "users[0].user".into()
            }
        );
        assert!(!problem.to_string().contains("canary"));
    }

    #[test]
    fn errors_never_quote_the_content() {
        let canary = "canary-5e1f";
        let inputs = [
            format!("just a note: {canary}"),
            format!("clusters: {canary}"),
            format!("[{canary}"),
            kubeconfig(
                &good_cluster(),
                &format!("    client-certificate-data: {canary}\n    client-key-data: {canary}"),
            ),
            kubeconfig(&format!("    server: {canary}"), "    token: abc"),
            kubeconfig(&good_cluster(), &format!("    token: \"{canary} x\"")),
            kubeconfig(
                &good_cluster(),
                &format!("    exec: {{command: {canary}, args: [{canary}]}}"),
            ),
            kubeconfig(&good_cluster(), &format!("    exec: {canary}")),
        ];
        for input in inputs {
            let problem = parse(&input).expect_err("refused");
            assert!(
                !problem.to_string().contains(canary) && !format!("{problem:?}").contains(canary),
                "{problem}"
            );
        }
    }

    #[test]
    fn contexts_are_resolved_or_refused() {
        let text = kubeconfig(&good_cluster(), &good_user());
        assert!(parse(&text.replace("current-context: x\n", "")).is_ok());
        assert_eq!(
            parse(&text.replace("current-context: x", "current-context: y")).expect_err("refused"),
            KubeconfigProblem::UndefinedContext
        );
        assert_eq!(
            parse(&text.replace("user: u}", "user: v}")).expect_err("refused"),
            KubeconfigProblem::Undefined {
                what: "user",
                list: "users"
            }
        );
        assert_eq!(
            parse(&text.replace("{cluster: c,", "{cluster: d,")).expect_err("refused"),
            KubeconfigProblem::Undefined {
                what: "cluster",
                list: "clusters"
            }
        );
    }

    #[test]
    fn credentials_must_be_one_whole_kind() {
        let cert = format!("    client-certificate-data: {}", b64(CERT));
        assert_eq!(
            parse(&kubeconfig(&good_cluster(), &cert)).expect_err("refused"),
            KubeconfigProblem::HalfClientCertificate {
                present: "client-certificate-data",
                missing: "client-key-data"
            }
        );
        assert_eq!(
            parse(&kubeconfig(
                &good_cluster(),
                &format!("{}\n    token: abc", good_user())
            ))
            .expect_err("refused"),
            KubeconfigProblem::TwoCredentials
        );
        assert_eq!(
            parse(&kubeconfig(&good_cluster(), "    extensions: []")).expect_err("refused"),
            KubeconfigProblem::NoCredentials
        );
        assert_eq!(
            parse(&kubeconfig(
                &good_cluster(),
                &format!("{cert}\n    client-key-data: {}", b64(CERT))
            ))
            .expect_err("refused"),
            KubeconfigProblem::Malformed {
                field: "client-key-data",
                place: "users[0].user".into(),
                what: "base64 of one PEM private key"
            }
        );
    }

    #[test]
    fn yaml_that_does_not_parse_is_refused_with_its_line_only() {
        let text =
            "apiVersion: v1\nclusters:\n- name: a\n  cluster: {server: \"https://secret-host\"\n";
        match parse(text) {
            Err(problem @ KubeconfigProblem::NotKubeconfig { line: Some(_) }) => {
                assert!(!problem.to_string().contains("secret-host"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_and_binary_input_is_refused() {
        assert_eq!(
            InlineKubeconfig::parse(&vec![b'a'; MAX_KUBECONFIG_BYTES + 1]).expect_err("refused"),
            KubeconfigProblem::TooLarge
        );
        assert_eq!(
            InlineKubeconfig::parse(&[0xff, 0xfe, 0x00]).expect_err("refused"),
            KubeconfigProblem::NotUtf8
        );
    }
}
