//! Words for `sh -c`: what the task's command line and a COMMAND health check both build.

/// Quotes a word for `sh`: `'...'` with every `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
