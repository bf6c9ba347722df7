//! `-o jsonpath=TEMPLATE`, as kubectl reads it: text with `{...}` fields,
//! each a JSONPath over the command's JSON output (`{.statusLine}`,
//! `{.publicKeyVersions[0]}`, `{$.step}`) or a quoted literal (`{"\n"}`);
//! a template with no braces is one path. The paths are RFC 9535 JSONPath
//! (`serde_json_path`), written as kubectl writes them: a leading `.` or
//! `[` means the root. Strings print as they are, other values as JSON,
//! several matches separated by spaces, none as nothing (kubectl's default
//! `--allow-missing-template-keys`). kubectl's `{range}`/`{end}` are not
//! supported: use a path that selects several values (`{.items[*].name}`).

use serde_json::Value;
use serde_json_path::JsonPath;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// What was written, for errors.
    pub text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Path(JsonPath),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        // kubectl's shells leave the quotes in `jsonpath='{...}'` only when
        // they were quoted twice; accept them.
        let unquoted = text
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .unwrap_or(text);
        if unquoted.is_empty() {
            return Err(
                "jsonpath needs a template, such as -o jsonpath='{.statusLine}'".to_owned(),
            );
        }
        if !unquoted.contains('{') && unquoted.contains('}') {
            return Err(format!("{text}: a '}}' with no '{{' before it"));
        }
        let mut parts = Vec::new();
        if !unquoted.contains('{') {
            parts.push(Part::Path(path(unquoted)?));
        }
        let mut rest = if unquoted.contains('{') { unquoted } else { "" };
        while !rest.is_empty() {
            match rest.find('{') {
                None => {
                    if rest.contains('}') {
                        return Err(format!("{text}: a '}}' with no '{{' before it"));
                    }
                    parts.push(Part::Text(rest.to_owned()));
                    rest = "";
                }
                Some(open) => {
                    if open > 0 {
                        parts.push(Part::Text(rest[..open].to_owned()));
                    }
                    let inner = &rest[open + 1..];
                    let close = inner
                        .find('}')
                        .ok_or_else(|| format!("{text}: a '{{' with no '}}' after it"))?;
                    parts.push(field(inner[..close].trim())?);
                    rest = &inner[close + 1..];
                }
            }
        }
        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    /// The template applied to `value`.
    pub fn render(&self, value: &Value) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Path(path) => {
                    let shown: Vec<String> = path
                        .query(value)
                        .all()
                        .into_iter()
                        .map(|value| match value {
                            // A token's claims or a status are anyone's:
                            // escaped when they hold control characters,
                            // so they cannot forge lines of the output.
                            Value::String(text) => crate::output::shown(text).into_owned(),
                            other => other.to_string(),
                        })
                        .collect();
                    out.push_str(&shown.join(" "));
                }
            }
        }
        out
    }
}

/// One `{...}`: a quoted literal or a path.
fn field(inner: &str) -> Result<Part, String> {
    if inner.starts_with('"') {
        return serde_json::from_str::<String>(inner)
            .map(Part::Text)
            .map_err(|e| format!("{{{inner}}}: not a quoted string ({e})"));
    }
    if matches!(inner.split_whitespace().next(), Some("range" | "end")) {
        return Err(format!(
            "{{{inner}}}: kubectl's range/end is not supported; select several values with one \
             path, such as {{.publicKeyVersions[*]}}"
        ));
    }
    path(inner).map(Part::Path)
}

/// A path as kubectl writes it (`.a.b`, `[0]`, `a.b`), as RFC 9535 reads it
/// (`$.a.b`).
fn path(text: &str) -> Result<JsonPath, String> {
    let text = text.trim();
    let rooted = if text.starts_with('$') {
        text.to_owned()
    } else if text.starts_with('.') || text.starts_with('[') {
        format!("${text}")
    } else if text.is_empty() {
        "$".to_owned()
    } else {
        format!("$.{text}")
    };
    JsonPath::parse(&rooted).map_err(|e| format!("{{{text}}}: not a JSONPath ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, value: &Value) -> String {
        Template::parse(template).expect(template).render(value)
    }

    #[test]
    fn kubectls_templates_render_as_kubectl_does() {
        let value = serde_json::json!({
            "cluster": "c1", "keyVersion": 2, "publicKeyVersions": [1, 2],
            "condition": {"status": "True"}, "waitingFor": null,
            "statusLine": "State of KSASigningKeyRotation ...",
        });
        assert_eq!(render("{.cluster}", &value), "c1");
        assert_eq!(render("{.keyVersion}", &value), "2");
        assert_eq!(render("{.publicKeyVersions}", &value), "[1,2]");
        assert_eq!(render("{.publicKeyVersions[*]}", &value), "1 2");
        assert_eq!(render("{.publicKeyVersions[0]}", &value), "1");
        assert_eq!(
            render("{.cluster}{\"\\t\"}{.condition.status}{\"\\n\"}", &value),
            "c1\tTrue\n"
        );
        assert_eq!(
            render("key {$.keyVersion} of {.cluster}", &value),
            "key 2 of c1"
        );
        assert_eq!(render("'{.cluster}'", &value), "c1");
        // No braces: one path.
        assert_eq!(render(".condition.status", &value), "True");
        assert_eq!(render("keyVersion", &value), "2");
        // Missing: nothing; null: null.
        assert_eq!(render("{.nothing}", &value), "");
        assert_eq!(render("{.waitingFor}", &value), "null");
    }

    /// A claim or status string with control characters cannot forge a
    /// line of the output (hostile read of issue 33): it is escaped, as
    /// the text output escapes it; a literal of the template is the user's.
    #[test]
    fn strings_with_control_characters_are_escaped() {
        let value = serde_json::json!({"sub": "system:serviceaccount:a:b\nvalid: true\u{1b}[2K"});
        let shown = render("{.sub}{\"\\n\"}", &value);
        assert_eq!(
            shown,
            "\"system:serviceaccount:a:b\\nvalid: true\\u{1b}[2K\"\n"
        );
        assert_eq!(shown.lines().count(), 1);
    }

    #[test]
    fn bad_templates_are_refused_saying_why() {
        for (template, says) in [
            ("", "needs a template"),
            ("{.a", "no '}'"),
            ("a}", "no '{'"),
            (
                "{range .items[*]}{.name}{end}",
                "range/end is not supported",
            ),
            ("{.a[}", "not a JSONPath"),
            ("{\"unterminated}", "not a quoted string"),
        ] {
            let error = Template::parse(template).expect_err(template);
            assert!(error.contains(says), "{template}: {error}");
        }
    }
}
