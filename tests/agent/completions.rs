//! Shell completions and the man page against the CLI they describe. The
//! subcommands and their flags are read from `ops-agent --help`, what a
//! user sees, so a subcommand added later is checked without editing this
//! file. Each shell is checked in the real shell: bash's script is loaded
//! and its completion function called as bash calls it on TAB; zsh
//! completes in an interactive zsh on a pseudo-terminal (`zsh/zpty`), with
//! the script on its `fpath` and `compinit` run; fish answers `complete
//! -C`. zsh and fish are the `zsh` and `fish` tiers (`.ci/run` installs
//! both).

use std::path::Path;
use std::process::Command;

use crate::support::agent::{text, Sandbox};
use crate::support::tier;

/// One subcommand: its path below `ops-agent` (`["tasks", "list"]`).
type Cmd = Vec<String>;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ops-agent <path> --help`.
fn help(sb: &Sandbox, path: &[String]) -> String {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let out = sb.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    stdout(&out)
}

/// The names listed under `Commands:` in a help text (`help` included).
fn commands_in(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The long flags (without `--`) listed under `Options:` in a help text.
fn long_flags_in(help: &str) -> Vec<String> {
    help.lines()
        .map(str::trim_start)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let first = words.next()?;
            let long = if first.starts_with("--") {
                first
            } else if first.len() == 3 && first.starts_with('-') && first.ends_with(',') {
                words.next()?
            } else {
                return None;
            };
            let name = long.strip_prefix("--")?.trim_end_matches("...");
            Some(name.to_string())
        })
        .collect()
}

/// Every subcommand, top level first, then the ones below them; `help`
/// (and its mirror of the tree) left out, it takes no flags.
fn every_subcommand(sb: &Sandbox) -> Vec<Cmd> {
    let top: Vec<Cmd> = commands_in(&help(sb, &[]))
        .into_iter()
        .filter(|c| c != "help")
        .map(|c| vec![c])
        .collect();
    // A floor, so a help format this parser no longer reads cannot pass
    // with nothing to check.
    assert!(top.len() >= 20, "{top:?}");
    let mut all = top.clone();
    for parent in &top {
        for child in commands_in(&help(sb, parent)) {
            if child != "help" {
                all.push(vec![parent[0].clone(), child]);
            }
        }
    }
    all
}

fn script(sb: &Sandbox, shell: &str) -> String {
    let out = sb.run(&["completions", shell]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    stdout(&out)
}

/// What a real bash offers for `words` (the last one is the word being
/// completed) with the bash script loaded: the completion function that
/// `complete -p ops-agent` names, called with bash's arguments and
/// `COMP_WORDS`/`COMP_CWORD`, then `COMPREPLY`, one per line.
fn bash_offers(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        r#"source "$1" || exit 3
spec=$(complete -p ops-agent) || exit 4
f=${{spec#*-F }}; f=${{f%% *}}
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}
"$f" ops-agent "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = quoted.join(" "),
        cword = words.len() - 1,
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program, "bash"])
        .arg(script)
        .output()
        .expect("running bash");
    assert!(out.status.success(), "bash: {}", text(&out));
    stdout(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn bash_script(sb: &Sandbox) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script(sb, "bash")).unwrap();
    file
}

#[test]
fn completions_and_man_page_name_every_subcommand() {
    let sb = Sandbox::new();
    let cmds = every_subcommand(&sb);
    let zsh = script(&sb, "zsh");
    let fish = script(&sb, "fish");
    let bash = script(&sb, "bash");
    let out = sb.run(&["man"]);
    let man = stdout(&out);
    assert!(
        man.starts_with(".ie ") && man.contains(".TH ops-agent 1"),
        "{man}"
    );
    assert!(
        man.contains("ops\\-agent\\-install") && man.contains("\\-\\-systemd"),
        "{man}"
    );
    for cmd in &cmds {
        let name = cmd.last().unwrap();
        // zsh: `'name:about'` in the list its `_describe` offers.
        assert!(zsh.contains(&format!("\n'{name}:")), "zsh lacks {cmd:?}");
        // fish: offered where no subcommand (or this one's parent) is typed yet.
        let offered_when = match cmd.as_slice() {
            [_] => "__fish_ops_agent_needs_command\"".to_string(),
            [parent, _] => {
                format!("__fish_ops_agent_using_subcommand {parent}; and not __fish_seen_subcommand_from")
            }
            _ => unreachable!(),
        };
        assert!(
            fish.lines()
                .any(|l| l.contains(&offered_when) && l.contains(&format!(" -a \"{name}\" "))),
            "fish lacks {cmd:?}"
        );
        // bash: the case arm that follows the words typed so far.
        let arm = match cmd.as_slice() {
            [name] => format!("ops__agent,{name})"),
            [parent, name] => format!("ops__agent__subcmd__{},{name})", parent.replace('-', "__")),
            _ => unreachable!(),
        };
        assert!(bash.contains(&arm), "bash lacks {cmd:?}");
        // The man page: a page per subcommand, named in the SEE ALSO list.
        let page = format!("ops-agent-{}", cmd.join("-")).replace('-', "\\-");
        assert!(man.contains(&format!("{page}(1)")), "man lacks {cmd:?}");
    }
}

#[test]
fn a_real_bash_completes_every_subcommand() {
    let sb = Sandbox::new();
    let file = bash_script(&sb);
    let offered = bash_offers(file.path(), &["ops-agent", ""]);
    for cmd in every_subcommand(&sb).iter().filter(|c| c.len() == 1) {
        assert!(offered.contains(&cmd[0]), "{cmd:?} not in {offered:?}");
    }
    let offered = bash_offers(file.path(), &["ops-agent", "ins"]);
    assert_eq!(offered, ["install"], "a prefix narrows the offer");
}

#[test]
fn a_real_bash_completes_every_subcommands_flags() {
    let sb = Sandbox::new();
    let file = bash_script(&sb);
    for cmd in every_subcommand(&sb) {
        let mut words: Vec<&str> = vec!["ops-agent"];
        words.extend(cmd.iter().map(String::as_str));
        words.push("--");
        let offered = bash_offers(file.path(), &words);
        for flag in long_flags_in(&help(&sb, &cmd)) {
            assert!(
                offered.contains(&format!("--{flag}")),
                "ops-agent {} --<TAB>: --{flag} not in {offered:?}",
                cmd.join(" ")
            );
        }
    }
}

#[test]
fn zsh_and_fish_offer_every_subcommands_flags() {
    let sb = Sandbox::new();
    let zsh = script(&sb, "zsh");
    let fish = script(&sb, "fish");
    for cmd in every_subcommand(&sb) {
        let flags = long_flags_in(&help(&sb, &cmd));
        assert!(flags.contains(&"help".to_string()), "{cmd:?}: {flags:?}");
        // fish: `-l flag` on a line for exactly this subcommand (one with
        // subcommands of its own: before one of them is typed).
        let conditions = match cmd.as_slice() {
            [name] => vec![
                format!("\"__fish_ops_agent_using_subcommand {name}\""),
                format!("\"__fish_ops_agent_using_subcommand {name}; and not "),
            ],
            [parent, name] => vec![format!(
                "\"__fish_ops_agent_using_subcommand {parent}; and __fish_seen_subcommand_from {name}\""
            )],
            _ => unreachable!(),
        };
        for flag in &flags {
            assert!(
                fish.lines()
                    .any(|l| conditions.iter().any(|c| l.contains(c.as_str()))
                        && l.split_whitespace()
                            .collect::<Vec<_>>()
                            .windows(2)
                            .any(|w| w == ["-l", flag.as_str()])),
                "fish: ops-agent {} --{flag}",
                cmd.join(" ")
            );
        }
        // zsh: the top-level subcommand's `_arguments` block lists the flag.
        let [name] = cmd.as_slice() else { continue };
        let lines: Vec<&str> = zsh.lines().collect();
        let start = lines
            .windows(2)
            .position(|w| w[0].trim() == format!("({name})") && w[1].starts_with("_arguments"))
            .unwrap_or_else(|| panic!("zsh has no block for {name}"));
        let block: Vec<&str> = lines[start..]
            .iter()
            .take_while(|l| l.trim() != ";;")
            .copied()
            .collect();
        let block = block.join("\n");
        for flag in &flags {
            assert!(
                block.contains(&format!("--{flag}[")) || block.contains(&format!("--{flag}=[")),
                "zsh: ops-agent {name} --{flag}"
            );
        }
    }
}

/// The typed lines (each ending in the word being completed) with the
/// subcommand's long flags each must offer: `ops-agent <cmd> --`.
fn flag_lines(sb: &Sandbox) -> Vec<(String, Vec<String>)> {
    every_subcommand(sb)
        .into_iter()
        .map(|cmd| {
            let flags = long_flags_in(&help(sb, &cmd));
            (format!("ops-agent {} --", cmd.join(" ")), flags)
        })
        .collect()
}

/// Where a shell is installed, or the tier's `missing` line.
fn shell_for(tier_name: &str) -> Option<std::path::PathBuf> {
    let found = ["/usr/bin", "/bin"]
        .into_iter()
        .map(|d| Path::new(d).join(tier_name))
        .find(|p| p.exists());
    if found.is_none() {
        tier::missing(
            tier_name,
            &format!("{tier_name} is not installed (.ci/run installs Debian's {tier_name})"),
        );
    }
    found
}

/// Completes each of `lines` in an interactive zsh on a pseudo-terminal:
/// `compinit` with the script's directory first on `fpath`, each line
/// typed, completed by a widget that records what `compadd` was given,
/// then cleared. Returns, per line, what zsh offered. A line is typed only
/// once the prompt is back (`<PS>`): typed while a command still runs, the
/// terminal's own line discipline would take `^U` and lose the line.
const ZSH_CAPTURE: &str = r#"dir=$1; shift
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1='<PS>'; PS2=''; fpath=(${(q)dir} \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z 'comptest () { compadd () { builtin compadd -O __hits "$@"; builtin compadd "$@"; print -l -- "" "<HIT>"${^__hits} >&2 }; _main_complete "$@"; unfunction compadd }'
zpty -w z 'zle -C _cap complete-word comptest; bindkey "^B" _cap; bindkey "^U" kill-whole-line; exec 2>&1'
zpty -w z "echo '<RE''ADY>'"
zpty -r z out '*<READY>*<PS>*'
n=0
for typed in "$@"; do
  n=$((n+1))
  zpty -w z "$typed"$'\x02\x15'"echo '<E''ND>'"
  zpty -r z out '*<END>*<PS>*'
  for l in ${(f)out//$'\r'/}; do
    [[ $l == '<HIT>'* ]] && print -r -- "$n	${l#<HIT>}"
  done
done
zpty -d z"#;

/// Per typed line, the words a shell offered, from `<n>\t<word>` lines.
fn offers_by_line(output: &str, lines: usize) -> Vec<Vec<String>> {
    let mut offers = vec![Vec::new(); lines];
    for l in output.lines() {
        let Some((n, word)) = l.split_once('\t') else {
            continue;
        };
        let n: usize = n.parse().unwrap();
        offers[n - 1].push(word.to_string());
    }
    offers
}

#[test]
fn a_real_zsh_completes_every_subcommand_and_its_flags() {
    let Some(zsh) = shell_for("zsh") else { return };
    let sb = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("_ops-agent"), script(&sb, "zsh")).unwrap();
    let mut cases = flag_lines(&sb);
    cases.push(("ops-agent ins".into(), vec![]));
    let lines: Vec<&str> = cases.iter().map(|(l, _)| l.as_str()).collect();
    let out = Command::new(zsh)
        .arg("-f")
        .arg("-c")
        .arg(ZSH_CAPTURE)
        .arg("zsh")
        .arg(dir.path())
        .args(&lines)
        .output()
        .expect("running zsh");
    assert!(out.status.success(), "zsh: {}", text(&out));
    let offers = offers_by_line(&stdout(&out), lines.len());
    for ((line, flags), offered) in cases.iter().zip(&offers) {
        assert!(!flags.is_empty() || line.ends_with("ins"), "{line}");
        for flag in flags {
            assert!(
                offered.contains(&format!("--{flag}")),
                "zsh: {line}<TAB>: --{flag} not in {offered:?}"
            );
        }
    }
    assert_eq!(
        offers.last().unwrap(),
        &["install"],
        "a prefix narrows the offer"
    );
    tier::ran("zsh");
}

#[test]
fn a_real_fish_completes_every_subcommand_and_its_flags() {
    let Some(fish) = shell_for("fish") else {
        return;
    };
    let sb = Sandbox::new();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script(&sb, "fish")).unwrap();
    let mut cases = flag_lines(&sb);
    cases.push(("ops-agent ins".into(), vec![]));
    // `complete -C LINE` prints what fish offers, `word<TAB>description`.
    let program = r#"source $argv[1]; or exit 3
set n 0
for typed in $argv[2..-1]
    set n (math $n + 1)
    for c in (complete -C "$typed")
        printf '%s\t%s\n' $n (string split -f1 \t -- $c)
    end
end"#;
    let lines: Vec<&str> = cases.iter().map(|(l, _)| l.as_str()).collect();
    let out = Command::new(fish)
        .args(["--no-config", "-c", program])
        .arg(file.path())
        .args(&lines)
        .output()
        .expect("running fish");
    assert!(out.status.success(), "fish: {}", text(&out));
    let offers = offers_by_line(&stdout(&out), lines.len());
    for ((line, flags), offered) in cases.iter().zip(&offers) {
        for flag in flags {
            assert!(
                offered.contains(&format!("--{flag}")),
                "fish: {line}<TAB>: --{flag} not in {offered:?}"
            );
        }
    }
    assert_eq!(
        offers.last().unwrap(),
        &["install"],
        "a prefix narrows the offer"
    );
    tier::ran("fish");
}

#[test]
fn the_man_page_has_exit_status_environment_and_files() {
    let sb = Sandbox::new();
    let out = sb.run(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = stdout(&out);
    // Rendered as `man` shows it, where groff is installed (Debian's
    // groff-base, which man-db needs; `.ci/run` installs it).
    let groff = ["/usr/bin/groff", "/bin/groff"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(groff) = groff else {
        tier::missing(
            "groff",
            "groff is not installed (.ci/run installs groff-base)",
        );
        return;
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &page).unwrap();
    let out = Command::new(groff)
        .args(["-man", "-Tutf8", "-ww", "-rLL=200n"])
        .arg(file.path())
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff: {}",
        text(&out)
    );
    // Plain text: no overstrike (bold) sequences, hyphens as typed.
    let shown: String = String::from_utf8_lossy(&out.stdout).replace(['\u{2010}', '\u{2212}'], "-");
    let mut plain = String::new();
    for c in shown.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    let section = |title: &str| -> String {
        let start = plain
            .lines()
            .position(|l| l == title)
            .unwrap_or_else(|| panic!("no {title} section:\n{plain}"));
        plain
            .lines()
            .skip(start + 1)
            .take_while(|l| l.is_empty() || l.starts_with(' '))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let tags = |body: &str| -> Vec<String> {
        body.lines()
            .filter(|l| l.starts_with("       ") && !l.starts_with("        "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    let exit = section("EXIT STATUS");
    assert_eq!(tags(&exit), ["0", "1", "2", "3", "75", "78"], "{exit}");
    assert!(
        exit.contains("lock") && exit.contains("configuration"),
        "{exit}"
    );
    let env = section("ENVIRONMENT");
    for var in [
        "OPS_AGENT_CONFIG",
        "OPS_AGENT_MM_TOKEN",
        "DOCKER_HOST",
        "NO_COLOR",
    ] {
        assert!(
            tags(&env).iter().any(|t| t.trim_end_matches(',') == var),
            "{var}: {env}"
        );
    }
    let files = section("FILES");
    for path in [
        "/tmp/ops-agent-state.json",
        "/tmp/ops-agent.lock",
        "/tmp/mm-token.json",
        "/tmp/ops-fix-history.json",
        "~/system/agents/state/ops.json",
        "~/system/logs/ops-agent.log",
        "~/system/logs/ops-agent-launchd.log,",
    ] {
        assert!(tags(&files).iter().any(|t| t == path), "{path}: {files}");
    }
    tier::ran("groff");
}
