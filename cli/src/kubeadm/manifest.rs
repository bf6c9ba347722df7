//! Edits of kubeadm's static pod manifests: the values of one flag in the
//! container's command list, every other byte left as it was (comments,
//! order, indentation). kubelet restarts the static pod when its manifest
//! changes.

/// Why a manifest could not be edited.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("no `- --{flag}=...` line in the command list; is this a kubeadm static pod manifest?")]
    FlagMissing { flag: String },
}

/// Sets the values of `--flag`: the first line naming it becomes one line
/// per value (same indentation), later lines naming it are removed.
pub fn set_flag(text: &str, flag: &str, values: &[String]) -> Result<String, ManifestError> {
    let prefix = format!("--{flag}=");
    let mut out = String::with_capacity(text.len() + 64 * values.len());
    let mut replaced = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let names_flag = trimmed
            .strip_prefix("- ")
            .map(|item| item.trim().trim_matches('"').trim_matches('\''))
            .is_some_and(|item| item.starts_with(&prefix));
        if !names_flag {
            out.push_str(line);
            continue;
        }
        if !replaced {
            let indent = &line[..line.len() - trimmed.len()];
            let ending = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
            for value in values {
                out.push_str(&format!("{indent}- {prefix}{value}{ending}"));
            }
            replaced = true;
        }
    }
    if replaced {
        Ok(out)
    } else {
        Err(ManifestError::FlagMissing {
            flag: flag.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of `--flag` in the command list, in order.
    pub fn flag_values(text: &str, flag: &str) -> Vec<String> {
        let prefix = format!("--{flag}=");
        text.lines()
            .filter_map(|line| {
                let item = line.trim_start().strip_prefix("- ")?.trim();
                let item = item.trim_matches('"').trim_matches('\'');
                item.strip_prefix(&prefix).map(str::to_owned)
            })
            .collect()
    }

    const APISERVER: &str = "\
apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 10.0.0.2:6443
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=10.0.0.2
    # keys
    - --service-account-issuer=https://kubernetes.default.svc.cluster.local
    - --service-account-key-file=/etc/kubernetes/pki/sa.pub
    - --service-account-signing-key-file=/etc/kubernetes/pki/sa.key
    - --service-cluster-ip-range=10.96.0.0/12
    image: registry.k8s.io/kube-apiserver:v1.36.3
";

    #[test]
    fn only_the_flag_lines_change() {
        let values = vec![
            "/etc/kubernetes/pki/sa-v1.pub".to_owned(),
            "/etc/kubernetes/pki/sa-v2.pub".to_owned(),
        ];
        let edited = set_flag(APISERVER, "service-account-key-file", &values).expect("edits");
        let expected = APISERVER.replace(
            "    - --service-account-key-file=/etc/kubernetes/pki/sa.pub\n",
            "    - --service-account-key-file=/etc/kubernetes/pki/sa-v1.pub\n    - --service-account-key-file=/etc/kubernetes/pki/sa-v2.pub\n",
        );
        assert_eq!(edited, expected);
        assert_eq!(flag_values(&edited, "service-account-key-file"), values);
        // Back to one value: the second line goes, nothing else moves.
        let one = vec!["/etc/kubernetes/pki/sa-v2.pub".to_owned()];
        let again = set_flag(&edited, "service-account-key-file", &one).expect("edits");
        assert_eq!(
            again,
            APISERVER.replace("pki/sa.pub", "pki/sa-v2.pub"),
            "every other byte is kept"
        );
        assert_eq!(
            set_flag(APISERVER, "service-account-key-file", &one).expect("edits"),
            again,
            "idempotent"
        );
    }

    #[test]
    fn a_missing_flag_is_an_error_and_crlf_is_kept() {
        assert_eq!(
            set_flag("kind: Pod\n", "service-account-private-key-file", &[]),
            Err(ManifestError::FlagMissing {
                flag: "service-account-private-key-file".into()
            })
        );
        let crlf = "    - --service-account-private-key-file=/a\r\n    - --x=1\r\n";
        assert_eq!(
            set_flag(crlf, "service-account-private-key-file", &["/b".into()]).expect("edits"),
            "    - --service-account-private-key-file=/b\r\n    - --x=1\r\n"
        );
    }
}
