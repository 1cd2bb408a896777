//! Layered, typed settings for every Zócalo process.
//!
//! Settings come from the defaults each crate declares (`Default` on its
//! settings struct), then an optional TOML file, then `ZOCALO_` environment
//! variables where `__` nests (`ZOCALO_REVIEWS__DATABASE_URL` sets
//! `reviews.database_url`). Secrets are wrapped in [`Secret`] so they never
//! print. A settings error names the offending key in one line; binaries exit
//! with [`EXIT_CONFIG`] on it.
//!
//! [`live`] holds the settings that may change while a process runs, fed
//! by a watched file or a NATS KV key. This crate depends on nothing else
//! of ours.

pub mod live;

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Exit status for invalid configuration (`EX_CONFIG` in sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// A configuration problem, already phrased for one line of output.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        // figment reports one error per failed key; keep the first, it names the
        // path (`reviews.database_url`) and what was wrong with it.
        let first = error.into_iter().next();
        let Some(error) = first else {
            return ConfigError::new("unknown error");
        };
        let key = error.path.join(".");
        let source = error
            .metadata
            .as_ref()
            .map(|m| format!(" (from {})", m.name))
            .unwrap_or_default();
        if key.is_empty() {
            ConfigError(format!("{}{source}", error.kind))
        } else {
            ConfigError(format!("key `{key}`: {}{source}", error.kind))
        }
    }
}

/// Load `T` from its defaults, then `file` if given, then `ZOCALO_` variables.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    load_from(file, Env::prefixed("ZOCALO_").split("__"))
}

/// Like [`load`] but with an explicit environment provider (tests use this to
/// avoid touching the process environment).
pub fn load_from<T>(file: Option<&Path>, env: Env) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist",
                file.display()
            )));
        }
        figment = figment.merge(Toml::file(file));
    }
    Ok(figment.merge(env).extract()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Inner {
        port: u16,
        url: Option<String>,
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Settings {
        name: String,
        inner: Inner,
    }

    #[test]
    fn environment_overrides_defaults_and_nests_with_double_underscore() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ZOCALO_INNER__PORT", "9000");
            jail.set_env("ZOCALO_NAME", "x");
            let settings: Settings = load(None).map_err(|e| e.to_string())?;
            assert_eq!(settings.inner.port, 9000);
            assert_eq!(settings.name, "x");
            Ok(())
        });
    }

    #[test]
    fn file_is_read_and_env_wins_over_it() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "z.toml",
                "name = \"file\"\n[inner]\nport = 1\nurl = \"u\"\n",
            )?;
            jail.set_env("ZOCALO_INNER__PORT", "2");
            let settings: Settings = load(Some(Path::new("z.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(settings.name, "file");
            assert_eq!(settings.inner.port, 2);
            assert_eq!(settings.inner.url.as_deref(), Some("u"));
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ZOCALO_INNER__PORT", "not-a-port");
            let error = load::<Settings>(None).unwrap_err().to_string();
            assert!(error.contains("inner.port"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let error = load::<Settings>(Some(Path::new("/nonexistent/z.toml"))).unwrap_err();
        assert!(error.to_string().contains("does not exist"));
    }
}

/// A secret setting (a password, a key). It deserialises from a plain
/// string, but its `Debug` and `Serialize` never show the value, so settings
/// can be logged or dumped without leaking it. Read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// An empty secret serialises as itself: defaults pass through
/// serialisation on their way into the layered settings, and an unset secret
/// must stay unset there, not become the placeholder.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            serializer.serialize_str("")
        } else {
            serializer.serialize_str("[redacted]")
        }
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[derive(Default, Serialize, serde::Deserialize)]
    #[serde(default)]
    struct WithSecret {
        secret: Secret,
    }

    #[test]
    fn an_unset_secret_stays_unset_through_loading() {
        figment::Jail::expect_with(|_| {
            let loaded: WithSecret = load(None).map_err(|e| e.to_string())?;
            assert_eq!(loaded.secret.expose(), "");
            Ok(())
        });
    }

    #[test]
    fn secrets_never_print() {
        let secret: Secret = serde_json_like("hunter22");
        assert_eq!(secret.expose(), "hunter22");
        assert!(!format!("{secret:?}").contains("hunter22"));
    }

    fn serde_json_like(value: &str) -> Secret {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, StrDeserializer};
        let de: StrDeserializer<'_, Error> = value.into_deserializer();
        Secret::deserialize(de).unwrap()
    }
}
