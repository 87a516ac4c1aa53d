//! `[log]`: level (or filter directives) and format of the log.

use super::build::Builder;
use serde::{Deserialize, Serialize};

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Human,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Human => "human",
        }
    }
}

impl Builder<'_> {
    pub(super) fn check_log(&mut self, l: &LogConfig) {
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        let plain = !l.level.contains('=') && !l.level.contains(',');
        let ok = if plain {
            LEVELS
                .iter()
                .any(|lv| lv.eq_ignore_ascii_case(l.level.trim()))
        } else {
            tracing_subscriber::EnvFilter::try_new(&l.level).is_ok()
        };
        if !ok {
            self.problem(format!(
                "log.level: {:?} is not a level (trace, debug, info, warn, error, off) or a \
                 filter directive such as \"info,wsgate=debug\"{}",
                l.level,
                self.via("log.level")
            ));
        }
    }
}
