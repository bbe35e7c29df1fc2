//! How every lintas daemon reads its configuration: a TOML file whose structs use
//! `deny_unknown_fields`, overridden key by key from environment variables
//! `<PREFIX><KEY>` (for example `LINTAS_REGISTRY_HTTP_LISTEN`), then validated with
//! every problem reported at once.
#![forbid(unsafe_code)]

use std::path::Path;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("{path}: invalid configuration:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

/// Reads `path` and parses it with [`parse`].
pub fn load<T: DeserializeOwned>(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    prefix: &str,
) -> Result<T, SettingsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Read {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    parse(&text, env, prefix, &shown)
}

/// Parses TOML `text`, applying every `(name, value)` of `env` whose name starts with
/// `prefix` as an override of the key named by the rest, lower-cased. A value is read as
/// TOML when it parses as one (numbers, booleans, arrays), otherwise as a string. An
/// override naming an unknown key is refused like an unknown key in the file.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    prefix: &str,
    shown: &str,
) -> Result<T, SettingsError> {
    let parse_err = |detail: String| SettingsError::Parse {
        path: shown.to_owned(),
        detail,
    };
    let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
    for (key, value) in env {
        let Some(name) = key.strip_prefix(prefix) else {
            continue;
        };
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        table.insert(name.to_ascii_lowercase(), parsed);
    }
    table.try_into().map_err(|e: toml::de::Error| {
        parse_err(format!("{e} (environment overrides use {prefix}<KEY>)"))
    })
}

/// `dir` from a configuration file at `file`: absolute as is, relative to the file's
/// directory otherwise (`.` is that directory itself).
pub fn relative_to(file: &Path, dir: &Path) -> std::path::PathBuf {
    if dir.is_absolute() {
        return dir.to_owned();
    }
    // A bare file name ("ss.toml") has an empty parent: the current directory.
    let base = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if dir == Path::new(".") {
        base.to_owned()
    } else {
        base.join(dir)
    }
}

/// Collects validation problems so all of them are reported together.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    pub fn into_result(self, shown: &str) -> Result<(), SettingsError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid {
                path: shown.to_owned(),
                problems: self.0,
            })
        }
    }
}

/// A database URL fit for messages and logs: its password (in the user part or a
/// `password=` parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            // The user part ends at the last '@' before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let user = &rest[..at];
                    let user = match user.split_once(':') {
                        Some((name, _)) => format!("{name}:***"),
                        None => user.to_owned(),
                    };
                    format!("{scheme}://{user}{}", &rest[at..])
                }
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct C {
        name: String,
        n: u32,
        list: Vec<String>,
    }

    #[test]
    fn overrides_are_typed_and_unknown_ones_refused() {
        let text = "name = \"a\"\nn = 1\nlist = []\n";
        let c: C = parse(
            text,
            [
                ("P_N".into(), "7".into()),
                ("P_NAME".into(), "b c".into()),
                ("P_LIST".into(), "[\"x\"]".into()),
                ("Q_N".into(), "9".into()),
            ],
            "P_",
            "t",
        )
        .unwrap();
        assert_eq!((c.n, c.name.as_str(), c.list.len()), (7, "b c", 1));
        let err = parse::<C>(text, [("P_NOPE".into(), "1".into())], "P_", "t").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = parse::<C>(&format!("{text}extra = 1\n"), [], "P_", "t").unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn directories_are_relative_to_the_configuration_file() {
        let p = |s: &str| Path::new(s).to_owned();
        assert_eq!(relative_to(Path::new("ss.toml"), Path::new(".")), p("."));
        assert_eq!(
            relative_to(Path::new("ss.toml"), Path::new("data")),
            p("./data")
        );
        assert_eq!(
            relative_to(Path::new("/srv/x/ss.toml"), Path::new(".")),
            p("/srv/x")
        );
        assert_eq!(
            relative_to(Path::new("a/ss.toml"), Path::new("d")),
            p("a/d")
        );
        assert_eq!(
            relative_to(Path::new("a/ss.toml"), Path::new("/abs")),
            p("/abs")
        );
    }

    #[test]
    fn problems_are_all_listed() {
        let mut p = Problems::default();
        p.check(false, || "first".into());
        p.check(true, || "never".into());
        p.check(false, || "second".into());
        let msg = p.into_result("f.toml").unwrap_err().to_string();
        assert!(msg.contains("first") && msg.contains("second") && !msg.contains("never"));
    }

    #[test]
    fn passwords_in_database_urls_are_redacted() {
        let cases = [
            (
                "postgres://alice:s3cret@db:5432/sekolah",
                "postgres://alice:***@db:5432/sekolah",
            ),
            (
                "postgresql://alice:p@ss@db/x?sslmode=disable&password=two",
                "postgresql://alice:***@db/x?sslmode=disable&password=***",
            ),
            ("postgres://alice@db/x", "postgres://alice@db/x"),
            ("postgres://db/x?PASSWORD=z", "postgres://db/x?PASSWORD=***"),
            ("sqlite:sekolah.db", "sqlite:sekolah.db"),
            ("mysql://u:pw@h/d", "mysql://u:***@h/d"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
