//! The LaunchAgent plist: rendered from a [`JobSpec`], and the one fact
//! `doctor` reads back from an installed one (the program it runs).
//!
//! The repository's `launchd/com.john.ops-agent.plist` is this renderer's
//! output for `/usr/local/bin/ops-agent` and a home of `$HOME` (a test keeps
//! them equal), so the reference never drifts from what `install` writes.

use super::JobSpec;

/// XML text with the five special characters escaped.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`xml`] (and the numeric references a hand edit may add).
fn unxml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The LaunchAgent: one cycle every `interval_secs`, at load too, in the
/// background class; the environment the job needs; its stdout and
/// stderr next to the activity log; umask 077 so the files launchd itself
/// creates (those two logs) are owner-only. Pure.
pub(crate) fn render_plist(spec: &JobSpec) -> String {
    let mut s = String::new();
    s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    s += "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n";
    // XML forbids `--` inside a comment (strict parsers such as Python's
    // plistlib and xmllint reject the whole file), so the comment names
    // no flag.
    s += "<!--\n";
    s += &format!(
        "  ops-agent LaunchAgent: one cycle every {} s.\n",
        spec.interval_secs
    );
    s += "  Written by `ops-agent install` for launchd; to change it, run that\n";
    s += "  again (forced) rather than editing: `ops-agent doctor` compares this\n";
    s += "  file with what install would write now. launchd expands neither ~ nor\n";
    s += "  $VARS, so install writes every path out in full.\n";
    s += "-->\n";
    s += "<plist version=\"1.0\">\n<dict>\n";
    let key = |s: &mut String, k: &str| *s += &format!("    <key>{k}</key>\n");
    let string = |s: &mut String, indent: &str, v: &str| {
        *s += &format!("{indent}<string>{}</string>\n", xml(v));
    };
    key(&mut s, "Label");
    string(&mut s, "    ", &spec.names.launchd_label);
    key(&mut s, "ProgramArguments");
    s += "    <array>\n";
    for a in spec.argv() {
        string(&mut s, "        ", &a);
    }
    s += "    </array>\n";
    key(&mut s, "StartInterval");
    s += &format!("    <integer>{}</integer>\n", spec.interval_secs);
    key(&mut s, "RunAtLoad");
    s += "    <true/>\n";
    key(&mut s, "ProcessType");
    string(&mut s, "    ", "Background");
    key(&mut s, "Umask");
    s += "    <integer>63</integer>\n";
    key(&mut s, "EnvironmentVariables");
    s += "    <dict>\n";
    for (k, v) in &spec.env {
        s += &format!("        <key>{}</key>\n", xml(k));
        string(&mut s, "        ", v);
    }
    s += "    </dict>\n";
    key(&mut s, "StandardOutPath");
    string(&mut s, "    ", &spec.stdout_log.display().to_string());
    key(&mut s, "StandardErrorPath");
    string(&mut s, "    ", &spec.stderr_log.display().to_string());
    s += "</dict>\n</plist>\n";
    s
}

/// The `ProgramArguments` of a plist, for `doctor`'s "does the job run
/// this binary?". A plain scan, enough for the files [`render_plist`]
/// writes and their hand-edited cousins; `None` when there is no such
/// array.
pub(crate) fn program_arguments(plist: &str) -> Option<Vec<String>> {
    let after = &plist[plist.find("<key>ProgramArguments</key>")? + 27..];
    let body = after.trim_start().strip_prefix("<array>")?;
    let body = &body[..body.find("</array>")?];
    let mut args = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("<string>") {
        let tail = &rest[i + 8..];
        let end = tail.find("</string>")?;
        args.push(unxml(&tail[..end]));
        rest = &tail[end + 9..];
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{launchd_logs, ScheduleConfig, Scheduler};
    use std::path::Path;

    /// What the repository's reference plist is rendered from.
    fn reference_spec() -> JobSpec {
        let (out, err) = launchd_logs(Path::new("$HOME/system/logs/ops-agent.log"));
        JobSpec {
            binary: "/usr/local/bin/ops-agent".into(),
            config: Some("$HOME/Library/Application Support/ops-agent/config.toml".into()),
            interval_secs: 300,
            env: vec![("PATH".into(), Scheduler::Launchd.base_path().into())],
            stdout_log: out,
            stderr_log: err,
            names: ScheduleConfig::default(),
        }
    }

    #[test]
    fn the_reference_plist_is_what_install_renders() {
        let reference = include_str!("../../launchd/com.john.ops-agent.plist");
        let rendered = render_plist(&reference_spec());
        assert_eq!(
            reference, rendered,
            "launchd/com.john.ops-agent.plist is out of date: paste this renderer's output into it"
        );
        assert!(!reference.contains("/Users/"), "no hard-coded home");
    }

    #[test]
    fn the_comment_is_one_xml_allows() {
        let text = render_plist(&reference_spec());
        let comment = &text[text.find("<!--").unwrap() + 4..text.find("-->").unwrap()];
        assert!(
            !comment.contains("--") && !comment.ends_with('-'),
            "{comment}"
        );
        assert_eq!(text.matches("<!--").count(), 1);
    }

    #[test]
    fn special_characters_are_escaped_and_read_back() {
        let mut spec = reference_spec();
        spec.config = Some("/Users/a&b/<x> \"q\" 'y'.toml".into());
        let text = render_plist(&spec);
        assert!(text.contains("/Users/a&amp;b/&lt;x&gt; &quot;q&quot; &apos;y&apos;.toml"));
        let args = program_arguments(&text).unwrap();
        assert_eq!(args[2], "/Users/a&b/<x> \"q\" 'y'.toml");
        assert_eq!(args.len(), 4);
        assert_eq!(unxml("&#65;&#x42;&bogus;"), "AB&bogus;");
        assert_eq!(program_arguments("<plist/>"), None);
    }
}
