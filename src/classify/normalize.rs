//! What the fallback reads of a post: the same text for the keyword rules,
//! the model's features and the corrections' memory, so the three never
//! disagree about what was said.
//!
//! [`prepare`] does, in order:
//! 1. drops what the writer took back or only quoted: `~~struck through~~`
//!    text, and `> quoted` lines when the post says something of its own
//!    (the quoted post was labelled when it was posted);
//! 2. drops the politeness at both ends ([`super::polite`]): a greeting,
//!    an apology or a thanks does not change what a post is about;
//! 3. folds what is left ([`super::fold::fold`]): Serbian Cyrillic to Latin, lowercase,
//!    diacritics and apostrophes removed, so "Сајт не ради", "Sajt ne
//!    radi" and "sajt ne radi" are the same words;
//! 4. names a percentage of 90 or more ([`HIGH_PERCENT`]): "disk at 98 %"
//!    and "memory 99%" say the same thing, which the number alone does not;
//!    and a "TODO:" ([`TODO`]), which the word "todo" alone is not.

use std::sync::OnceLock;

use regex::Regex;

use super::fold::fold;

/// The word a percentage of 90 or more becomes: a disk, a CPU or an error
/// rate that high is the same news whatever the exact figure.
pub(crate) const HIGH_PERCENT: &str = "pcthigh";

/// The word a "TODO:" becomes.
pub(crate) const TODO: &str = "todoitem";

/// The text the rules, the model and the corrections' memory read: see the
/// module doc. Empty when nothing but politeness (or nothing) was said.
pub(crate) fn prepare(text: &str) -> String {
    // Quotes and struck text first (politeness inside a quote is not the
    // post's), and again once the politeness is cut ("Hi all! > quoted").
    let said = own_words(text);
    let content = own_words(super::polite::content(&said));
    name_high_percentages(&fold(&name_todo(&content)))
}

/// The post without what its writer struck through or only quoted. A post
/// that is nothing but a quote keeps it (without the markers): then the
/// quote is what was said.
fn own_words(text: &str) -> String {
    static STRUCK: OnceLock<Regex> = OnceLock::new();
    let struck = STRUCK.get_or_init(|| Regex::new(r"~~[^~]*~~").expect("static regex"));
    let text = struck.replace_all(text, " ");
    let quoted = |l: &str| l.trim_start().starts_with('>');
    let own = text.lines().any(|l| !quoted(l) && !l.trim().is_empty());
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if quoted(line) {
            if own {
                continue;
            }
            out.push_str(line.trim_start().trim_start_matches('>'));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// "TODO: …", "todo: …", "to-do: …" as [`TODO`]: a note of work to do,
/// which the word alone is not ("todo bien" is Spanish for "all fine").
fn name_todo(text: &str) -> std::borrow::Cow<'_, str> {
    static MARK: OnceLock<Regex> = OnceLock::new();
    let mark = MARK.get_or_init(|| {
        Regex::new(r"(?:\b(?i:todo|to-do|to do)\s*:)|(?:^\s*TODO\b)").expect("static regex")
    });
    mark.replace_all(text, format!(" {TODO} "))
}

/// Every percentage of 90 or more as [`HIGH_PERCENT`].
fn name_high_percentages(folded: &str) -> String {
    static PCT: OnceLock<Regex> = OnceLock::new();
    let pct = PCT.get_or_init(|| Regex::new(r"(\d+(?:[.,]\d+)?)\s*%").expect("static regex"));
    pct.replace_all(folded, |c: &regex::Captures| {
        let v: f64 = c[1].replace(',', ".").parse().unwrap_or(0.0);
        if (90.0..=100.0).contains(&v) {
            format!(" {HIGH_PERCENT} ")
        } else {
            c[0].to_string()
        }
    })
    .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyrillic_folds_to_its_latin_transliteration() {
        // Every letter of the Serbian Cyrillic alphabet, and texts written
        // both ways (with and without diacritics in the Latin one).
        let pairs = [
            (
                "АБВГДЂЕЖЗИЈКЛЉМНЊОПРСТЋУФХЦЧЏШ",
                "ABVGDĐEŽZIJKLLJMNNJOPRSTĆUFHCČDŽŠ",
            ),
            ("Сајт не ради, хитно!", "Sajt ne radi, hitno!"),
            ("Ђорђе је обрисао табелу", "Đorđe je obrisao tabelu"),
            ("Ђорђе је обрисао табелу", "Djordje je obrisao tabelu"),
            ("џабе, љубав, њушка", "džabe, ljubav, njuška"),
            ("џабе, љубав, њушка", "dzabe, ljubav, njuska"),
            ("плаћање не пролази", "placanje ne prolazi"),
            ("Мејлови не стижу од јуче", "Mejlovi ne stižu od juče"),
        ];
        for (cyrillic, latin) in pairs {
            assert_eq!(fold(cyrillic), fold(latin), "{cyrillic} / {latin}");
        }
        assert_eq!(fold("Сајт НЕ ради"), "sajt ne radi");
        let f = fold("Ђорђе Straße čačak");
        assert_eq!(fold(&f), f, "idempotent");
    }

    #[test]
    fn struck_and_quoted_text_is_not_what_the_post_says() {
        assert_eq!(
            prepare("~~prod is down~~ nvm, my vpn").trim(),
            "nvm, my vpn"
        );
        assert_eq!(
            prepare("> is the site down?\nworks, it was my wifi").trim(),
            "works, it was my wifi"
        );
        // Nothing but a quote: the quote is the post.
        assert_eq!(prepare("> the site is down").trim(), "the site is down");
    }

    #[test]
    fn a_todo_note_is_named_and_the_word_alone_is_not() {
        for text in [
            "todo: document the restore",
            "TODO clean up dns",
            "To-do: renew",
        ] {
            assert!(prepare(text).contains(TODO), "{text}");
        }
        for text in ["todo bien después del reinicio", "what to do now"] {
            assert!(!prepare(text).contains(TODO), "{text}");
        }
    }

    #[test]
    fn high_percentages_are_named() {
        assert_eq!(
            prepare("disk at 98 % and climbing")
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["disk", "at", HIGH_PERCENT, "and", "climbing"]
        );
        assert!(prepare("memory 99,5%").contains(HIGH_PERCENT));
        assert!(prepare("CPU 100%").contains(HIGH_PERCENT));
        assert!(!prepare("disk at 40%").contains(HIGH_PERCENT));
        assert!(!prepare("release 98 is out").contains(HIGH_PERCENT));
    }
}
