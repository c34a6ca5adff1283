//! The systemd user service (`Type=oneshot`: one cycle) and the timer
//! that starts it every `interval_secs`, rendered from a [`JobSpec`]; and
//! the program an installed service runs, read back for `doctor`.
//!
//! Unit files have their own quoting: `%` starts a specifier and `$` a
//! variable in `ExecStart=`, and words with spaces need double quotes, so
//! every value goes through [`exec_word`] or [`env_assignment`].

use super::JobSpec;

/// One argument of an `ExecStart=` line: `%` (a specifier) and `$` (a
/// variable) doubled, then [`quoted`]. Pure.
fn exec_word(s: &str) -> String {
    quoted(&s.replace('%', "%%").replace('$', "$$"))
}

/// The program of an `ExecStart=` line: `%` doubled, `$` kept (systemd
/// expands variables in the arguments only, so `$$` there would stay two
/// dollars and name another file), then [`quoted`]. A quote or a backslash
/// cannot be written at all (systemd refuses the unit): `JobSpec::check`
/// refuses those paths first. Pure.
fn exec_program_word(s: &str) -> String {
    quoted(&s.replace('%', "%%"))
}

/// A word as systemd.syntax(7) reads it: double-quoted (with `\` and `"`
/// escaped) when it holds whitespace, a quote, a backslash or `;`, or is
/// empty. Pure.
fn quoted(s: &str) -> String {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// An `Environment=` value: always quoted, `%` doubled (no `$` expansion
/// happens there). Pure.
fn env_assignment(k: &str, v: &str) -> String {
    let kv = format!("{k}={v}")
        .replace('%', "%%")
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("\"{kv}\"")
}

/// The first word of the first `ExecStart=` line, unquoted: the program the
/// service runs. `None` when there is none.
pub(crate) fn exec_program(unit: &str) -> Option<String> {
    let line = unit
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("ExecStart="))?
        .trim_start();
    // Prefixes that change how the program runs, not which one.
    let line = line.trim_start_matches(['-', '@', ':', '+', '!']);
    let word = if let Some(q) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = q.chars();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
        out
    } else {
        line.split_whitespace().next()?.to_string()
    };
    Some(word.replace("%%", "%"))
}

const HEADER: &str = "# Written by `ops-agent install --systemd`; to change it, run that again\n\
# (with --force) rather than editing: `ops-agent doctor` compares this file\n\
# with what install would write now.\n";

/// The service: one cycle, the job's environment, files owner-only, the
/// interval as a backstop timeout (the cycle ends itself within
/// `agent.deadline_secs`), and exit 75 (another cycle held the lock, e.g.
/// a run by hand) not counted as a failure. Pure.
pub(crate) fn render_service(spec: &JobSpec) -> String {
    let unit = &spec.names.systemd_unit;
    let argv = spec.argv();
    let exec: Vec<String> = argv
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 {
                exec_program_word(a)
            } else {
                exec_word(a)
            }
        })
        .collect();
    let mut s = format!("# ops-agent: one cycle, started by {unit}.timer.\n{HEADER}");
    s += "[Unit]\n";
    s += "Description=ops-agent: one cycle (chat triage, tasks, health checks, fixes)\n";
    s += "\n[Service]\n";
    s += "Type=oneshot\n";
    s += &format!("ExecStart={}\n", exec.join(" "));
    for (k, v) in &spec.env {
        s += &format!("Environment={}\n", env_assignment(k, v));
    }
    s += "UMask=0077\n";
    s += "# The cycle ends itself within agent.deadline_secs; this only backs it up.\n";
    s += &format!("TimeoutStartSec={}\n", spec.interval_secs);
    s += "# 75: another cycle held the lock (a run by hand); it runs again next time.\n";
    s += "SuccessExitStatus=75\n";
    s
}

/// The timer: the first cycle 10 s after the timer starts (install, login,
/// boot with lingering), then one every `interval_secs` after the last
/// start; systemd never starts the service while it still runs. Pure.
pub(crate) fn render_timer(spec: &JobSpec) -> String {
    let unit = &spec.names.systemd_unit;
    let n = spec.interval_secs;
    let mut s = format!("# ops-agent: starts {unit}.service every {n} s.\n{HEADER}");
    s += "[Unit]\n";
    s += &format!("Description=ops-agent every {n} s\n");
    s += "\n[Timer]\n";
    s += "OnActiveSec=10s\n";
    s += &format!("OnUnitActiveSec={n}s\n");
    s += "AccuracySec=1s\n";
    s += "# Acts on OnCalendar= timers only; for this one OnActiveSec= is the\n";
    s += "# catch-up run after a boot or a login.\n";
    s += "Persistent=true\n";
    s += "\n[Install]\n";
    s += "WantedBy=timers.target\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::spec;

    #[test]
    fn exec_words_table() {
        let table = [
            ("/usr/bin/ops-agent", "/usr/bin/ops-agent"),
            ("run-once", "run-once"),
            ("/a b/c.toml", "\"/a b/c.toml\""),
            ("100%", "100%%"),
            ("$HOME/x", "$$HOME/x"),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("a\\b", "\"a\\\\b\""),
            (";", "\";\""),
            ("", "\"\""),
        ];
        for (arg, want) in table {
            assert_eq!(exec_word(arg), want, "{arg}");
        }
        assert_eq!(
            exec_program_word("/opt/$x/100%/a b"),
            "\"/opt/$x/100%%/a b\""
        );
        assert_eq!(
            env_assignment("PATH", "/a b:%h"),
            "\"PATH=/a b:%%h\"".to_string()
        );
    }

    #[test]
    fn the_service_runs_the_binary_with_its_config() {
        let mut s = spec();
        s.config = Some("/home/ann/my cfg/ops%.toml".into());
        let text = render_service(&s);
        assert!(
            text.contains(
                "\nExecStart=/usr/local/bin/ops-agent --config \"/home/ann/my cfg/ops%%.toml\" run-once\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nType=oneshot\n")
                && text.contains("\nEnvironment=\"PATH=/usr/local/sbin:")
        );
        assert!(text.contains("\nTimeoutStartSec=300\n"), "{text}");
        assert_eq!(
            exec_program(&text).as_deref(),
            Some("/usr/local/bin/ops-agent")
        );
        let quoted = "[Service]\nExecStart=-\"/opt/my app/ops-agent\" run-once\n";
        assert_eq!(
            exec_program(quoted).as_deref(),
            Some("/opt/my app/ops-agent")
        );
        assert_eq!(exec_program("[Service]\n"), None);
        s.binary = "/opt/$HOME/100%/ops-agent".into();
        let text = render_service(&s);
        assert!(
            text.contains("\nExecStart=/opt/$HOME/100%%/ops-agent --config"),
            "{text}"
        );
        assert_eq!(
            exec_program(&text).as_deref(),
            Some("/opt/$HOME/100%/ops-agent")
        );
    }

    #[test]
    fn the_timer_runs_every_interval() {
        let mut s = spec();
        s.interval_secs = 120;
        let text = render_timer(&s);
        for line in [
            "OnActiveSec=10s",
            "OnUnitActiveSec=120s",
            "AccuracySec=1s",
            "Persistent=true",
            "WantedBy=timers.target",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}: {text}");
        }
        assert!(text.starts_with("# ops-agent: starts ops-agent.service every 120 s.\n"));
    }
}
