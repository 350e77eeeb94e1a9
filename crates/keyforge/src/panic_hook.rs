//! A panic hook that never prints a secret: the payload is scrubbed of
//! anything shaped like an API key before it is logged. Secret types already
//! redact themselves; this covers a panic message built from raw text.

use std::panic::PanicHookInfo;
use std::sync::LazyLock;

use regex::Regex;

static KEY_SHAPES: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"kf_[a-z0-9][a-z0-9-]{0,23}_[0-9A-Za-z]{34}",
        r"|kfadmin_[0-9A-Za-z]{20,}",
        r"|sk-[A-Za-z0-9_\-]{16,}",
        r"|AIza[0-9A-Za-z_\-]{35}",
        r"|[A-Za-z0-9+/=_\-]{40,}",
    ))
    .ok()
});

pub(crate) fn install() {
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(message = %render(info), "panic");
    }));
}

pub(crate) fn render(info: &PanicHookInfo<'_>) -> String {
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-text payload)");
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    format!("{} at {location}", scrub(payload))
}

fn scrub(text: &str) -> String {
    match KEY_SHAPES.as_ref() {
        Some(regex) => regex.replace_all(text, "[REDACTED]").into_owned(),
        // Without the pattern, print nothing of the payload rather than risk it.
        None => "[payload withheld]".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_scrubbed() {
        let canary = format!("kf_dev_{}", "Ab1".repeat(11) + "x");
        let provider = format!("sk-proj-{}", "Zz9".repeat(10));
        let captured = std::sync::Arc::new(std::sync::OnceLock::new());
        let slot = captured.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = slot.set(render(info));
        }));
        let message = format!("boom with {canary} and {provider}");
        let _ = std::thread::spawn(move || panic!("{message}")).join();
        std::panic::set_hook(previous);
        let rendered = captured.get().unwrap();
        assert!(
            rendered.starts_with("boom with [REDACTED] and [REDACTED] at "),
            "{rendered}"
        );
        assert!(!rendered.contains(&canary) && !rendered.contains(&provider));
    }
}
