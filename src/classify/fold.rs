//! Folding: how every part of the fallback compares words. One place, so
//! the politeness phrases, the rules, the model and the corrections' memory
//! fold "Хвала", "Hvala" and "hvala" alike.

/// Lowercase, Serbian Cyrillic written in Latin, diacritics folded,
/// apostrophes removed. Idempotent, and the same for a Cyrillic text and
/// its Latin transliteration (with or without diacritics): `ђ` and `đ`
/// both become `dj`, `џ` and `dž` both `dz`, `љ` and `lj` both `lj`.
pub(crate) fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            '\'' | '’' | '`' | '´' | 'ъ' | 'ь' => {}
            'ä' | 'á' | 'à' | 'â' | 'ã' | 'å' | 'а' => out.push('a'),
            'ö' | 'ó' | 'ò' | 'ô' | 'õ' | 'ø' | 'о' => out.push('o'),
            'ü' | 'ú' | 'ù' | 'û' | 'у' => out.push('u'),
            'é' | 'è' | 'ê' | 'ë' | 'е' | 'ё' | 'э' | 'є' => out.push('e'),
            'í' | 'ì' | 'î' | 'ï' | 'и' | 'і' => out.push('i'),
            'ñ' | 'н' => out.push('n'),
            'ç' | 'č' | 'ć' | 'ц' | 'ч' | 'ћ' | 'ќ' => out.push('c'),
            'š' | 'с' | 'ш' => out.push('s'),
            'ž' | 'з' | 'ж' => out.push('z'),
            'đ' | 'ђ' | 'ѓ' => out.push_str("dj"),
            'ß' => out.push_str("ss"),
            'б' => out.push('b'),
            'в' => out.push('v'),
            'г' | 'ґ' => out.push('g'),
            'д' => out.push('d'),
            'ј' | 'й' => out.push('j'),
            'к' => out.push('k'),
            'л' => out.push('l'),
            'љ' => out.push_str("lj"),
            'м' => out.push('m'),
            'њ' => out.push_str("nj"),
            'п' => out.push('p'),
            'р' => out.push('r'),
            'т' => out.push('t'),
            'ф' => out.push('f'),
            'х' => out.push('h'),
            'џ' | 'ѕ' => out.push_str("dz"),
            'ы' => out.push('y'),
            'щ' => out.push_str("sc"),
            'ю' => out.push_str("ju"),
            'я' => out.push_str("ja"),
            'ї' => out.push_str("ji"),
            c => out.push(c),
        }
    }
    out
}
