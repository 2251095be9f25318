//! Turning byte offsets in the config text into a 1-based line and a field path
//! (`extensions[1].port`) for error messages.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// 1-based line number of byte offset `at` in `text`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    // `at` comes from the TOML parser and lies on a char boundary; count bytes anyway so
    // a bad offset cannot panic.
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The dotted path of the deepest key or value whose source covers `at`, if the text
/// parses as TOML at all.
pub(super) fn field_path(text: &str, at: &Range<usize>) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut path = String::new();
    find_in_table(doc.get_ref(), at, &mut path).then_some(path)
}

fn covers(span: &Range<usize>, at: &Range<usize>) -> bool {
    span.start < span.end && span.start <= at.start && at.end <= span.end
}

/// The span of a value together with everything inside it. Array-of-tables elements
/// have only their `[[header]]` as span; their keys follow it.
fn extent(value: &Spanned<DeValue<'_>>) -> Range<usize> {
    let mut span = value.span();
    let mut widen = |other: Range<usize>| {
        span.start = span.start.min(other.start);
        span.end = span.end.max(other.end);
    };
    match value.get_ref() {
        DeValue::Table(table) => {
            for (key, item) in table {
                widen(key.span());
                widen(extent(item));
            }
        }
        DeValue::Array(items) => {
            for item in items.iter() {
                widen(extent(item));
            }
        }
        _ => {}
    }
    span
}

fn find_in_table(table: &DeTable<'_>, at: &Range<usize>, path: &mut String) -> bool {
    for (key, value) in table {
        let on_key = covers(&key.span(), at);
        if on_key || covers(&extent(value), at) {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key.get_ref());
            if !on_key {
                descend(value, at, path);
            }
            return true;
        }
    }
    false
}

fn descend(value: &Spanned<DeValue<'_>>, at: &Range<usize>, path: &mut String) {
    match value.get_ref() {
        DeValue::Table(table) => {
            find_in_table(table, at, path);
        }
        DeValue::Array(items) => {
            if let Some((index, item)) = items
                .iter()
                .enumerate()
                .find(|(_, item)| covers(&extent(item), at))
            {
                path.push_str(&format!("[{index}]"));
                descend(item, at, path);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a", 99), 1);
    }

    #[test]
    fn paths_name_array_elements() {
        let text = "[[extensions]]\nnumber = \"101\"\nport = 1\n\n[[extensions]]\nnumber = \"102\"\nport = 300\n";
        let at = text.find("300").expect("in text");
        assert_eq!(
            field_path(text, &(at..at + 3)).as_deref(),
            Some("extensions[1].port")
        );
        let inline = "x = 1\n[t]\nlist = [{a = 1}, {b = \"q\"}]\n";
        let at = inline.find("\"q\"").expect("in text");
        assert_eq!(
            field_path(inline, &(at..at + 3)).as_deref(),
            Some("t.list[1].b")
        );
    }
}
