//! Politeness at the edges of a post: greetings, apologies, well-wishes,
//! thanks and sign-offs, in the languages the team writes.
//!
//! "Good morning, sorry to bother you, the shop is not loading at all,
//! please help! Thanks" is the same post as "the shop is not loading at
//! all, please help!". A model that counts words learns that greetings and
//! thanks go with chatter (most posts made of them are chatter) and lets
//! them outvote an outage. So the fallback reads a post without the
//! politeness at its ends: the same text with or without it gives the same
//! features, the same rules and so the same label, by construction rather
//! than by hoping the training data balances it. A post that is nothing
//! but politeness has no content left, and a post with nothing to go on is
//! ROUTINE ([`super::fallback`]).
//!
//! Only the ends are stripped, phrase by phrase: politeness in the middle
//! of a post is rare and may carry meaning ("thanks to the CDN the site is
//! down"), and a thanks with an object ("thanks for the fix") says what it
//! is about, so it stays. After a greeting, a vocative ("all", "ekipa") or
//! a capitalised name before a comma goes too ("Hi Marko, ..."); before a
//! closing, a capitalised name after a sign-off ("Kind regards, Mirela").
//! The phrases are folded ([`super::fold::fold`]): "Хвала" is "hvala".

use std::collections::HashMap;
use std::sync::OnceLock;

use super::fold::fold;

/// Greetings, at the start of a post.
const GREETINGS: &[&str] = &[
    "hi",
    "hey",
    "heya",
    "hello",
    "helo",
    "hallo",
    "hej",
    "ej",
    "yo",
    "hiya",
    "howdy",
    "good morning",
    "morning",
    "mornin",
    "good afternoon",
    "good evening",
    "good day",
    "gm",
    "dobro jutro",
    "jutro",
    "dobar dan",
    "dobro vece",
    "dobra vecer",
    "dobar vecer",
    "zdravo",
    "cao",
    "pozdrav",
    "pozdrav svima",
    "bok",
    "poz",
    "pozz",
    "guten morgen",
    "morgen",
    "guten tag",
    "guten abend",
    "moin",
    "servus",
    "gruss gott",
    "grusse",
    "buenos dias",
    "buen dia",
    "buenas",
    "buenas tardes",
    "buenas noches",
    "hola",
    "saludos",
];

/// Who a greeting is addressed to.
const VOCATIVES: &[&str] = &[
    "all",
    "everyone",
    "everybody",
    "team",
    "guys",
    "folks",
    "people",
    "yall",
    "y all",
    "there",
    "again",
    "svima",
    "ekipa",
    "ekipo",
    "narode",
    "ljudi",
    "tim",
    "kolege",
    "drustvo",
    "zusammen",
    "leute",
    "alle",
    "ihr",
    "team",
    "a todos",
    "todos",
    "equipo",
    "chicos",
    "gente",
];

/// Apologies and well-wishes, at either end.
const APOLOGIES: &[&str] = &[
    "sorry",
    "so sorry",
    "sorry to bother",
    "sorry to bother you",
    "sorry to bother you again",
    "sorry to bug you",
    "sorry to be a pain",
    "sorry for the trouble",
    "sorry for the bother",
    "sorry for the ping",
    "sorry for bothering",
    "sorry for bothering you",
    "sorry again",
    "apologies",
    "my apologies",
    "apologies for the bother",
    "apologies for the trouble",
    "apologies for bothering you",
    "apologies for the ping",
    "excuse me",
    "i hope you are well",
    "hope you are well",
    "i hope youre well",
    "hope youre well",
    "hope all is well",
    "hope youre doing well",
    "i hope all is well",
    "hope you are doing well",
    "izvini",
    "izvinite",
    "izvinjavam se",
    "izvini sto smetam",
    "izvinite sto smetam",
    "izvinjavam se sto smetam",
    "izvini sto smaram",
    "izvinite sto smaram",
    "izvinite na smetnji",
    "izvini na smetnji",
    "oprosti",
    "oprostite",
    "oprostite na smetnji",
    "oprosti na smetnji",
    "oprostite sto smetam",
    "oprosti sto smetam",
    "zao mi je sto smetam",
    "sorry sto smetam",
    "izvinjavam se na smetnji",
    "nadam se da ste dobro",
    "nadam se da si dobro",
    "nadam se da je sve u redu",
    "entschuldigung",
    "entschuldigt",
    "entschuldige",
    "entschuldigt die storung",
    "entschuldigung fur die storung",
    "sorry fur die storung",
    "sorry dass ich store",
    "sorry dass ich nerve",
    "tut mir leid",
    "ich hoffe es geht euch gut",
    "hoffe es geht euch gut",
    "perdon",
    "perdona",
    "perdonad",
    "perdon por la molestia",
    "perdonad las molestias",
    "perdona la molestia",
    "disculpa",
    "disculpad",
    "disculpe",
    "disculpa la molestia",
    "disculpad las molestias",
    "disculpad que moleste",
    "disculpa que moleste",
    "siento molestar",
    "lo siento",
    "espero que esteis bien",
    "espero que estes bien",
];

/// Thanks: stripped at either end, unless an object follows ("thanks for
/// the fix" is about the fix).
const THANKS: &[&str] = &[
    "thanks",
    "thank you",
    "thanks a lot",
    "thanks so much",
    "thanks very much",
    "thank you so much",
    "thank you very much",
    "thanks again",
    "many thanks",
    "thanks in advance",
    "thank you in advance",
    "thanks all",
    "thanks everyone",
    "thanks guys",
    "thanks team",
    "thx",
    "thnx",
    "thx in advance",
    "tnx",
    "ty",
    "tyvm",
    "hvala",
    "hvala vam",
    "hvala ti",
    "hvala puno",
    "hvala vam puno",
    "puno hvala",
    "hvala lepo",
    "hvala lijepo",
    "hvala unapred",
    "hvala unaprijed",
    "unapred hvala",
    "unaprijed hvala",
    "hvala svima",
    "fala",
    "danke",
    "danke schon",
    "danke sehr",
    "danke euch",
    "vielen dank",
    "besten dank",
    "danke im voraus",
    "vielen dank im voraus",
    "gracias",
    "muchas gracias",
    "mil gracias",
    "gracias de antemano",
    "muchas gracias de antemano",
    "muchisimas gracias",
    "thanks so much in advance",
    "thank you so much in advance",
    "many thanks in advance",
    "hvala puno unapred",
    "hvala vam unapred",
    "hvala unapred puno",
    "hvala puno unaprijed",
    "hvala vam unaprijed",
    "danke schon im voraus",
    "danke euch im voraus",
    "gracias por adelantado",
    "merci",
];

/// Words after a thanks that make it a thanks for something.
const THANKS_OBJECT: &[&str] = &["for", "na", "za", "fur", "furs", "por", "to"];

/// Sign-offs and parting wishes, at the end (a name may follow).
const SIGN_OFFS: &[&str] = &[
    "regards",
    "best regards",
    "kind regards",
    "warm regards",
    "br",
    "cheers",
    "have a nice day",
    "have a good day",
    "have a good one",
    "pozdrav",
    "pozdravi",
    "pozz",
    "lp",
    "lep pozdrav",
    "lijep pozdrav",
    "srdacan pozdrav",
    "srdacno",
    "prijatan dan",
    "lep dan",
    "mfg",
    "mit freundlichen grussen",
    "viele grusse",
    "liebe grusse",
    "beste grusse",
    "lg",
    "vg",
    "schonen tag",
    "saludos",
    "un saludo",
    "atentamente",
    "buen dia",
];

/// Sign-offs only when a name follows ("Best, Ana"): alone, "best" is
/// more often a word of the post.
const BEFORE_A_NAME: &[&str] = &["best", "greetings"];

/// Conjunctions left dangling where politeness was cut ("sorry to bother,
/// but the shop is down").
const GLUE: &[&str] = &[
    "and", "but", "so", "ali", "pa", "und", "aber", "also", "pero", "y",
];

/// One word of the post: where it is, its folded form, whether it reads
/// like a name (capitalised, not all capitals like `FIRING`), and whether
/// punctuation ends its clause.
struct Token {
    end: usize,
    folded: String,
    name_like: bool,
    clause_end: bool,
}

fn tokens(text: &str) -> Vec<Token> {
    let is_word = |c: char| c.is_alphanumeric() || matches!(c, '\'' | '’' | '`' | '´');
    let mut out: Vec<Token> = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (is_word(c) && i < text.len(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let word = &text[s..i];
                let folded = fold(word);
                if !folded.is_empty() {
                    out.push(Token {
                        end: i,
                        folded,
                        name_like: word.chars().next().is_some_and(char::is_uppercase)
                            && word.chars().skip(1).any(char::is_lowercase),
                        clause_end: false,
                    });
                }
                start = None;
            }
            _ => {}
        }
        if matches!(c, ',' | '.' | '!' | '?' | ';' | ':' | '\n' | '-' | '—') {
            if let Some(t) = out.last_mut() {
                if start.is_none() {
                    t.clause_end = true;
                }
            }
        }
    }
    out
}

/// The phrases of one list by their first and by their last word, so a
/// position is compared only with the phrases that can match there.
struct Index {
    by_first: HashMap<&'static str, Vec<&'static str>>,
    by_last: HashMap<&'static str, Vec<&'static str>>,
}

impl Index {
    fn of(list: &'static [&'static str]) -> Index {
        let mut by_first: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        let mut by_last: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for p in list {
            let first = p.split(' ').next().unwrap_or(p);
            let last = p.rsplit(' ').next().unwrap_or(p);
            by_first.entry(first).or_default().push(p);
            by_last.entry(last).or_default().push(p);
        }
        Index { by_first, by_last }
    }
}

/// The lists of this module, indexed once.
fn index(list: &'static [&'static str]) -> &'static Index {
    static INDEXES: OnceLock<Vec<(usize, Index)>> = OnceLock::new();
    let all = INDEXES.get_or_init(|| {
        [
            GREETINGS,
            VOCATIVES,
            APOLOGIES,
            THANKS,
            SIGN_OFFS,
            BEFORE_A_NAME,
        ]
        .into_iter()
        .map(|l| (l.as_ptr() as usize, Index::of(l)))
        .collect()
    });
    &all.iter()
        .find(|(at, _)| *at == list.as_ptr() as usize)
        .expect("a list of this module")
        .1
}

/// Whether `words` spell phrase `p` (its words separated by one space).
fn spells(p: &str, words: &[Token]) -> bool {
    let mut at = words.iter();
    p.split(' ')
        .all(|part| at.next().is_some_and(|w| w.folded == part))
        && at.next().is_none()
}

/// The number of words of phrase `p`.
fn length(p: &str) -> usize {
    p.bytes().filter(|b| *b == b' ').count() + 1
}

/// The length of the longest phrase of `lists` that the words starting at
/// `at` spell (0: none).
fn phrase_at(words: &[Token], at: usize, lists: &[&'static [&'static str]]) -> usize {
    let Some(first) = words.get(at) else { return 0 };
    lists
        .iter()
        .filter_map(|l| index(l).by_first.get(first.folded.as_str()))
        .flatten()
        .map(|p| (p, length(p)))
        .filter(|(p, n)| at + n <= words.len() && spells(p, &words[at..at + n]))
        .map(|(_, n)| n)
        .max()
        .unwrap_or(0)
}

/// The length of the longest phrase of `lists` that ends just before `end`.
fn phrase_before(words: &[Token], end: usize, lists: &[&'static [&'static str]]) -> usize {
    let Some(last) = end.checked_sub(1).and_then(|k| words.get(k)) else {
        return 0;
    };
    lists
        .iter()
        .filter_map(|l| index(l).by_last.get(last.folded.as_str()))
        .flatten()
        .filter(|p| {
            let n = length(p);
            n <= end && spells(p, &words[end - n..end])
        })
        .map(|p| length(p))
        .max()
        .unwrap_or(0)
}

fn is_thanks_for(words: &[Token], at: usize, n: usize) -> bool {
    phrase_at(words, at, &[THANKS]) == n
        && words
            .get(at + n)
            .is_some_and(|w| THANKS_OBJECT.contains(&w.folded.as_str()))
}

/// The part of `text` between the politeness at its start and at its end
/// (a slice of `text`); empty when the post is nothing but politeness.
pub(crate) fn content(text: &str) -> &str {
    let words = tokens(text);
    let (mut i, mut j) = (0, words.len());
    let mut cut = false;
    while i < j {
        let greeting = phrase_at(&words[..j], i, &[GREETINGS]);
        let other = phrase_at(&words[..j], i, &[APOLOGIES, THANKS]);
        if greeting >= other && greeting > 0 {
            i += greeting;
            cut = true;
            // "Hi all! Planka ...": the greeting is complete.
            if words[i - 1].clause_end {
                continue;
            }
            // "hi team the site is down".
            let vocative = phrase_at(&words[..j], i, &[VOCATIVES]);
            if vocative > 0 {
                i += vocative;
                continue;
            }
            // "Hi Marko," / "Hallo Ana Petrović:" — a name, then a break.
            for n in [1, 2] {
                let name = &words[i.min(j)..(i + n).min(j)];
                if name.len() == n
                    && i + n < j
                    && name.iter().all(|w| w.name_like)
                    && name[n - 1].clause_end
                    && name[..n - 1].iter().all(|w| !w.clause_end)
                {
                    i += n;
                    break;
                }
            }
        } else if other > 0 && !is_thanks_for(&words, i, other) {
            i += other;
            cut = true;
        } else if cut && GLUE.contains(&words[i].folded.as_str()) {
            i += 1;
        } else {
            break;
        }
    }
    let mut cut = false;
    while j > i {
        let n = phrase_before(&words[i..], j - i, &[APOLOGIES, THANKS, SIGN_OFFS]);
        if n > 0 && !is_thanks_for(&words, j - n, n) {
            j -= n;
            cut = true;
            continue;
        }
        // "Kind regards, Mirela" / "Thanks, Ana Kovač".
        let named = [1, 2].into_iter().find_map(|k| {
            if j < i + k + 1 || !words[j - k..j].iter().all(|w| w.name_like) {
                return None;
            }
            let before = j - k;
            let n = phrase_before(&words[i..], before - i, &[THANKS, SIGN_OFFS, BEFORE_A_NAME]);
            (n > 0 && words[before - 1].clause_end).then_some(k + n)
        });
        if let Some(n) = named {
            j -= n;
            cut = true;
        } else if cut && GLUE.contains(&words[j - 1].folded.as_str()) {
            j -= 1;
        } else {
            break;
        }
    }
    if i >= j {
        return "";
    }
    // Where the politeness ends: after its last word and the punctuation
    // and blanks that follow it, so a mark that starts the rest ("> " of
    // a quote, "~~") stays with it.
    let start = if i == 0 {
        0
    } else {
        let after = words[i - 1].end;
        after
            + text[after..]
                .find(|c: char| {
                    !(c.is_whitespace()
                        || matches!(c, ',' | '.' | '!' | '?' | ';' | ':' | '-' | '—'))
                })
                .unwrap_or(text.len() - after)
    };
    let end = if j == words.len() {
        text.len()
    } else {
        // What sticks to the last word stays with it ("98%").
        let last = words[j - 1].end;
        last + text[last..]
            .find(|c: char| c.is_whitespace() || matches!(c, ',' | '.' | '!' | '?' | ';' | ':'))
            .unwrap_or(text.len() - last)
    };
    &text[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn politeness_at_the_ends_is_cut() {
        let table = [
            (
                "Good morning, sorry to bother you, the shop is not loading at all, please help! Thanks",
                "the shop is not loading at all, please help",
            ),
            ("hi team the site is down", "the site is down"),
            ("Hi Marko, can you add Ana?", "can you add Ana?"),
            (
                "sorry to bother, but the shop is down. Kind regards, Mirela",
                "the shop is down",
            ),
            (
                "Dobro jutro, izvinite što smetam, sajt ne radi. Hvala unapred!",
                "sajt ne radi",
            ),
            ("Добро јутро, сајт не ради. Хвала!", "сајт не ради"),
            (
                "Guten Morgen, entschuldigt die Störung, der Shop lädt nicht. Danke!",
                "der Shop lädt nicht",
            ),
            (
                "Buenos días, perdonad las molestias, la tienda no carga. ¡Gracias!",
                "la tienda no carga",
            ),
            ("the deploy is done, thanks, Ana", "the deploy is done"),
            ("disk at 98% thanks", "disk at 98%"),
            ("Hi all! [FIRING:1] BackupMissing", "[FIRING:1] BackupMissing"),
            ("Pozdrav svima! People get bounces", "People get bounces"),
            ("Hi all! > is it down?\nworks", "> is it down?\nworks"),
        ];
        for (text, want) in table {
            assert_eq!(content(text), want, "{text:?}");
        }
    }

    #[test]
    fn what_is_not_politeness_stays() {
        let table = [
            ("thanks for the quick fix!", "thanks for the quick fix!"),
            ("hvala na pomoći", "hvala na pomoći"),
            (
                "the site is down, thanks, it works now",
                "the site is down, thanks, it works now",
            ),
            ("I can't log in", "I can't log in"),
            (
                "a customer says the shop is down",
                "a customer says the shop is down",
            ),
            ("Hi Planka is down again", "Planka is down again"),
        ];
        for (text, want) in table {
            assert_eq!(content(text), want, "{text:?}");
        }
    }

    #[test]
    fn nothing_but_politeness_leaves_nothing() {
        for text in [
            "thanks!",
            "Good morning everyone! ☀️",
            "Хвала",
            "hvala puno 🙏",
            "sorry",
            "Danke, LG",
        ] {
            assert_eq!(content(text), "", "{text:?}");
        }
    }

    #[test]
    fn the_same_post_with_or_without_politeness_is_the_same_content() {
        let post = "planka is down for everyone since 9";
        for wrapped in [
            format!("Hello team, I hope you are well. {post}. Thank you so much!"),
            format!("Pozdrav svima! {post} hvala puno"),
            format!("Hola equipo, {post}. Muchas gracias de antemano"),
            format!("{post}, danke im Voraus"),
        ] {
            assert_eq!(content(&wrapped), post, "{wrapped:?}");
        }
    }
}
