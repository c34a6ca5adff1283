//! One policy for everything the agent posts in chat: replies, alerts,
//! follow-ups, recovery notices and silence answers all go through
//! [`for_chat`], so no post of the agent can notify a whole channel, carry
//! control characters, run past its length cap or leave a code fence open.
//!
//! The policy is idempotent (applying it twice changes nothing), so a
//! caller that shapes text early and the Mattermost layer that applies it
//! again on the wire never disagree.

use std::sync::OnceLock;

use regex::{Captures, Regex};

/// Mentions that notify a whole channel or team.
const MASS_MENTIONS: &[&str] = &["channel", "all", "here", "everyone"];

/// Zero-width space: put after the `@`, the mention reads the same and
/// notifies nobody.
const ZWSP: char = '\u{200B}';

/// The chat policy: control characters out (newline and tab stay), blanks
/// trimmed, mass mentions neutralised, at most `max_chars` characters with
/// an unbalanced ``` fence closed inside the cap.
pub(crate) fn for_chat(text: &str, max_chars: usize) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    let out = neutralize_mentions(clean.trim());
    let capped = cap(&out, max_chars);
    if capped.matches("```").count() % 2 == 0 {
        return capped;
    }
    let closing = "\n```";
    let mut body = cap(&out, max_chars.saturating_sub(closing.len()));
    if body.matches("```").count() % 2 == 0 {
        // The cut removed the unmatched fence itself: nothing to close.
        return body;
    }
    body.push_str(closing);
    body
}

/// `@channel`, `@all`, `@here`, `@everyone` (any case, full-width `＠`,
/// trailing punctuation) and Slack's `<!channel>` forms become mentions
/// broken by a zero-width space; `@alice`, `@allison`, `@channel_ops` and
/// `a@here.com` stay as they are.
fn neutralize_mentions(text: &str) -> String {
    static AT: OnceLock<Regex> = OnceLock::new();
    static BANG: OnceLock<Regex> = OnceLock::new();
    let at = AT.get_or_init(|| Regex::new(r"[@＠]([A-Za-z0-9._-]+)").expect("static regex"));
    let bang = BANG.get_or_init(|| {
        Regex::new(r"<!((?i-u:channel|all|here|everyone))(\|[^>]*)?>").expect("static regex")
    });
    let text = bang.replace_all(text, |c: &Captures| format!("@{ZWSP}{}", &c[1]));
    at.replace_all(&text, |c: &Captures| {
        let name = &c[1];
        let base = name.trim_end_matches(['.', '-', '_']).to_ascii_lowercase();
        if MASS_MENTIONS.contains(&base.as_str()) {
            format!("@{ZWSP}{name}")
        } else {
            c[0].to_string()
        }
    })
    .into_owned()
}

/// Outside text (a container's log, an HTTP body, a model's guess) shown
/// verbatim in a post, a task or a card: inside a code fence it cannot
/// format, link or mention anyone. A backtick run inside it is broken by a
/// zero-width space so it cannot close the fence, and every `@` gets one
/// too, so no name (not only `@channel`) is notified from a log line.
/// Control characters go, as in [`for_chat`]. The caller scrubs secrets
/// first (`scrub::text`).
pub(crate) fn fenced(body: &str) -> String {
    let clean: String = body
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    let mut out = String::with_capacity(clean.len() + 8);
    let mut ticks = 0;
    for c in clean.trim_end().chars() {
        if c == '`' {
            ticks += 1;
            if ticks == 3 {
                out.push(ZWSP);
                ticks = 1;
            }
        } else {
            ticks = 0;
        }
        out.push(c);
        if c == '@' || c == '＠' {
            out.push(ZWSP);
        }
    }
    format!("```\n{out}\n```")
}

/// At most `max` characters (not bytes), ending in "…" when cut.
pub(crate) fn cap(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s = s.trim_end().to_string();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mention_table() {
        let z = ZWSP;
        let cases = [
            ("ping @channel now", format!("ping @{z}channel now")),
            ("@ALL, @Here!", format!("@{z}ALL, @{z}Here!")),
            ("＠here", format!("@{z}here")),
            ("@here.", format!("@{z}here.")),
            ("cc @everyone and @ana", format!("cc @{z}everyone and @ana")),
            ("<!channel> wake up", format!("@{z}channel wake up")),
            (
                "<!here|here> and <!EVERYONE>",
                format!("@{z}here and @{z}EVERYONE"),
            ),
            (
                "@alice @allison @channels-team",
                "@alice @allison @channels-team".to_string(),
            ),
            ("@channel_ops stays", "@channel_ops stays".to_string()),
            ("mail a@here.com", "mail a@here.com".to_string()),
        ];
        for (input, want) in cases {
            assert_eq!(neutralize_mentions(input), want, "{input}");
        }
    }

    #[test]
    fn the_policy_is_idempotent() {
        for input in [
            "@channel ```\nopen fence and a long tail",
            "<!here> \u{7}bell\u{1b}[31m",
            "plain",
        ] {
            let once = for_chat(input, 20);
            assert_eq!(for_chat(&once, 20), once, "{input}");
            assert!(once.chars().count() <= 20, "{once}");
        }
    }

    #[test]
    fn cap_counts_characters_and_marks_the_cut() {
        assert_eq!(cap("héllo wörld", 5), "héll…");
        assert_eq!(cap("short", 10), "short");
        // Exactly the cap: returned as it is, no mark.
        assert_eq!(cap("héllo", 5), "héllo");
        assert_eq!(cap("ééééé", 3), "éé…");
        assert_eq!(cap("x", 0), "");
        // The cut after 99 characters falls inside a word, so nothing is
        // trimmed before the mark: exactly the cap.
        let s = for_chat(&"@channel ".repeat(1000), 100);
        assert_eq!(s.chars().count(), 100, "{s}");
        assert!(!s.contains("@channel"));
    }

    #[test]
    fn fenced_outside_text_cannot_close_the_fence_or_mention() {
        let z = ZWSP;
        let cases = [
            ("plain line", "```\nplain line\n```".to_string()),
            ("a ``` b ```` c", format!("```\na ``{z}` b ``{z}`` c\n```")),
            (
                "hi @alice and @channel",
                format!("```\nhi @{z}alice and @{z}channel\n```"),
            ),
            ("bell\u{7}\nnext\n\n", "```\nbell\nnext\n```".to_string()),
        ];
        for (input, want) in cases {
            let got = fenced(input);
            assert_eq!(got, want, "{input:?}");
            assert_eq!(got.matches("```").count(), 2, "{got}");
            assert_eq!(for_chat(&got, 1000), got, "the chat policy keeps it");
        }
    }

    #[test]
    fn fences_stay_balanced_inside_the_cap() {
        let s = for_chat(&format!("```\n{}", "x".repeat(200)), 50);
        assert_eq!(s.matches("```").count(), 2, "{s}");
        assert!(s.chars().count() <= 50, "{s}");
        assert_eq!(for_chat("a\u{0}b\tc\nd", 50), "ab\tc\nd");
    }
}
