//! Topic templates in emqtt-bench's syntax: `%i` the client's sequence number, `%c` its client id,
//! `%u` its username (empty without one). Any other `%` is kept as it is.

/// What the variables of one client expand to.
pub struct Vars<'a> {
    pub seq: u64,
    pub client_id: &'a str,
    pub username: &'a str,
}

pub fn expand(template: &str, vars: &Vars<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('i') => out.push_str(&vars.seq.to_string()),
            Some('c') => out.push_str(vars.client_id),
            Some('u') => out.push_str(vars.username),
            _ => {
                out.push('%');
                continue;
            }
        }
        chars.next();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(template: &str, expected: &str) {
        let vars = Vars {
            seq: 17,
            client_id: "bench_pub_17",
            username: "alice",
        };
        assert_eq!(expand(template, &vars), expected, "template {template:?}");
    }

    #[test]
    fn templates_expand() {
        check("bench/%i", "bench/17");
        check("t/%c/x", "t/bench_pub_17/x");
        check("%u/%i/%c", "alice/17/bench_pub_17");
        check("plain/topic", "plain/topic");
        check("", "");
        check("%i%i", "1717");
        check("100%", "100%");
        check("%x/%%i", "%x/%17");
        check("$share/g/bench/%i", "$share/g/bench/17");
        check("ünï/%i", "ünï/17");
    }
}
