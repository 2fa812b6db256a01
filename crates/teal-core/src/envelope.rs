//! The check that a model server's answer, passed on to the caller as it came, is a V2
//! response: one JSON object with an `outputs` array among its members, and valid JSON
//! throughout, so a server answering garbage is refused rather than passed on as a 200 the
//! caller cannot read.
//!
//! It walks the text once without decoding or allocating anything: on the gateway's pass-
//! through path this runs for every answer, where a serde visit of the same text cost a
//! tenth of a proxied request. It accepts exactly what serde_json accepts for a struct with
//! an `outputs` sequence field (the differential fuzz target `v2_response` checks that),
//! with two deliberate differences: a member's name is compared as written, so one named with
//! escapes (`"\u006futputs"`) is not taken as `outputs`, and its escapes are not decoded; and
//! a list in place of the object is refused (serde would take `[[...]]` as the struct's
//! fields in order).

/// Why an answer is not a V2 response. The gateway counts it as the model server's fault,
/// not the caller's, and the message says what the server got wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The text is not JSON; the byte offset is where reading stopped.
    #[error("not valid JSON at byte {0}")]
    Syntax(usize),
    /// Valid JSON, but not an object, so it cannot be a V2 response.
    #[error("not a JSON object")]
    NotAnObject,
    /// An object without an `outputs` array, as an error page in JSON would be.
    #[error("it has no `outputs` list")]
    NoOutputs,
    /// Two `outputs` members: which one a client reads would depend on its JSON library.
    #[error("it has more than one `outputs` member")]
    RepeatedOutputs,
}

/// Checks `json` as described in the module's documentation, without decoding it, so the
/// gateway can pass a model server's answer on unchanged and still refuse garbage.
pub fn check(json: &[u8]) -> Result<(), EnvelopeError> {
    let mut scan = Scanner { text: json, at: 0 };
    scan.space();
    if scan.next() != Some(b'{') {
        return Err(if scan.at > json.len() {
            EnvelopeError::Syntax(json.len())
        } else {
            EnvelopeError::NotAnObject
        });
    }
    let mut outputs = false;
    scan.space();
    if scan.peek() == Some(b'}') {
        scan.at += 1;
    } else {
        loop {
            let start = scan.at;
            let key = scan.key()?;
            // The envelope's own member names are decoded as text, so they must be UTF-8;
            // everything below them is skipped as bytes, names included.
            if !key.is_ascii() && std::str::from_utf8(key).is_err() {
                return Err(EnvelopeError::Syntax(start));
            }
            scan.space();
            if key == b"outputs" {
                if outputs {
                    return Err(EnvelopeError::RepeatedOutputs);
                }
                if scan.peek() != Some(b'[') {
                    return Err(EnvelopeError::NoOutputs);
                }
                outputs = true;
            }
            scan.value()?;
            scan.space();
            match scan.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(scan.syntax()),
            }
        }
    }
    scan.space();
    if scan.at < json.len() {
        return Err(scan.syntax());
    }
    if outputs {
        Ok(())
    } else {
        Err(EnvelopeError::NoOutputs)
    }
}

struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek();
        self.at += 1;
        byte
    }

    /// The error for the byte just read (or the one at the cursor).
    fn syntax(&self) -> EnvelopeError {
        EnvelopeError::Syntax(self.at.saturating_sub(1).min(self.text.len()))
    }

    fn space(&mut self) {
        let mut at = self.at;
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(at) {
            at += 1;
        }
        self.at = at;
    }

    /// A member's name and the colon after it; the name as written, escapes and all.
    fn key(&mut self) -> Result<&'a [u8], EnvelopeError> {
        self.space();
        if self.peek() != Some(b'"') {
            self.at += 1;
            return Err(self.syntax());
        }
        let key = self.string()?;
        self.space();
        if self.next() != Some(b':') {
            return Err(self.syntax());
        }
        Ok(key)
    }

    /// A string starting at the cursor's `"`; its raw content. The index is a local: kept
    /// in a register, the loop over plain characters is a few instructions a byte.
    fn string(&mut self) -> Result<&'a [u8], EnvelopeError> {
        let text = self.text;
        let start = self.at + 1;
        let mut at = start;
        let failed = |at: usize| Err(EnvelopeError::Syntax(at.min(text.len())));
        loop {
            let Some(&byte) = text.get(at) else {
                return failed(at);
            };
            at += 1;
            match byte {
                b'"' => {
                    self.at = at;
                    return Ok(&text[start..at - 1]);
                }
                b'\\' => match text.get(at) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at += 1,
                    Some(b'u')
                        if text
                            .get(at + 1..at + 5)
                            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) =>
                    {
                        at += 5;
                    }
                    _ => return failed(at),
                },
                0..0x20 => return failed(at - 1),
                _ => {}
            }
        }
    }

    fn digits(&mut self) -> Result<(), EnvelopeError> {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
            return Err(self.syntax());
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Result<(), EnvelopeError> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            _ => self.digits()?,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    fn word(&mut self, word: &[u8]) -> Result<(), EnvelopeError> {
        for expected in word {
            if self.next() != Some(*expected) {
                return Err(self.syntax());
            }
        }
        Ok(())
    }

    /// One value of any kind, iteratively, so no input can exhaust the stack (serde_json
    /// skips values without a depth limit too). Each open container is a bit, 1 for an
    /// object and 0 for a list: the first 64 in `shallow`, any deeper in `deep`.
    fn value(&mut self) -> Result<(), EnvelopeError> {
        let mut shallow: u64 = 0;
        let mut deep: Vec<bool> = Vec::new();
        let mut open = 0usize;
        loop {
            // A value starts here.
            self.space();
            let mut opened = None;
            match self.peek() {
                Some(b'{') => opened = Some(true),
                Some(b'[') => opened = Some(false),
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.word(b"true")?,
                Some(b'f') => self.word(b"false")?,
                Some(b'n') => self.word(b"null")?,
                _ => {
                    self.at += 1;
                    return Err(self.syntax());
                }
            }
            if let Some(object) = opened {
                self.at += 1;
                self.space();
                let close = if object { b'}' } else { b']' };
                if self.peek() == Some(close) {
                    self.at += 1;
                } else {
                    if open < 64 {
                        shallow |= u64::from(object) << open;
                    } else {
                        deep.push(object);
                    }
                    open += 1;
                    if object {
                        self.key()?;
                    }
                    continue;
                }
            }
            // A value ended: close the containers it ends, or go on to the next member.
            loop {
                if open == 0 {
                    return Ok(());
                }
                let object = match deep.last() {
                    Some(object) => *object,
                    None => (shallow >> (open - 1)) & 1 == 1,
                };
                self.space();
                match self.next() {
                    Some(b',') => {
                        if object {
                            self.key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    _ => return Err(self.syntax()),
                }
                if deep.pop().is_none() {
                    shallow &= !(1 << (open - 1));
                }
                open -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Envelope {
        #[allow(dead_code)]
        outputs: Vec<serde::de::IgnoredAny>,
    }

    fn serde_accepts(json: &[u8]) -> bool {
        serde_json::from_slice::<Envelope>(json).is_ok()
    }

    #[test]
    fn v2_responses_pass() {
        for json in [
            r#"{"model_name":"digits","model_version":"a","outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[3]}]}"#,
            r#" { "outputs" : [ ] } "#,
            r#"{"id":"x\"y\\z\u00e9\n","outputs":[[1,-2.5e+3,0.0,1E2,true,false,null,{"a":{"b":[]}}]],"parameters":{}}"#,
            "{\"outputs\":[\"caf\u{e9}\"]}\n",
            "{\"caf\u{e9}\":1,\"outputs\":[]}",
        ] {
            assert_eq!(check(json.as_bytes()), Ok(()), "{json}");
            assert!(serde_accepts(json.as_bytes()), "{json}");
        }
    }

    #[test]
    fn everything_serde_refuses_is_refused() {
        let unclosed = format!(r#"{{"outputs":[{}]}}"#, "[{\"a\":".repeat(300));
        let cases: Vec<&[u8]> = vec![
            b"",
            b"   ",
            b"<html>bad gateway</html>",
            b"[]",
            b"[[]]",
            b"null",
            br#""outputs""#,
            b"{}",
            br#"{"outputs":{}}"#,
            br#"{"outputs":null}"#,
            br#"{"output":[]}"#,
            br#"{"outputs":[]"#,
            br#"{"outputs":[]}}"#,
            br#"{"outputs":[]} x"#,
            br#"{"outputs":[1,]}"#,
            br#"{"outputs":[,1]}"#,
            br#"{"outputs":[],}"#,
            br#"{"outputs":[01]}"#,
            br#"{"outputs":[1.]}"#,
            br#"{"outputs":[.5]}"#,
            br#"{"outputs":[-]}"#,
            br#"{"outputs":[1e]}"#,
            br#"{"outputs":[+1]}"#,
            br#"{"outputs":[tru]}"#,
            br#"{"outputs":[nul]}"#,
            br#"{"outputs":["a\x"]}"#,
            br#"{"outputs":["\u12"]}"#,
            b"{\"outputs\":[\"a\nb\"]}",
            br#"{"outputs":["open]}"#,
            br#"{"outputs":[{"a"}]}"#,
            br#"{"outputs":[{"a":}]}"#,
            br#"{"outputs":[{1:2}]}"#,
            br#"{"outputs":[{"a":1,}]}"#,
            br#"{"outputs":[}"#,
            br#"{"outputs":{]}"#,
            br#"{outputs:[]}"#,
            br#"{"outputs" []}"#,
            br#"{"outputs":[],"outputs":[]}"#,
            b"{\"\xff\":1,\"outputs\":[]}",
            b"{\"outputs\":[],\"x\xff\":1}",
            unclosed.as_bytes(),
        ];
        for json in cases {
            let text = String::from_utf8_lossy(json);
            assert!(check(json).is_err(), "accepted {text}");
            assert!(
                !serde_accepts(json) || json.starts_with(b"["),
                "serde accepts {text}"
            );
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_below_the_envelope_are_skipped_as_serde_skips_them() {
        // Found by the fuzz target: names and strings inside `outputs` are never decoded.
        let json = b"{\"outputs\":[{\"d\xe1tatype\":\"FP32\",\"s\":\"\xff\"}]}";
        assert_eq!(check(json), Ok(()));
        assert!(serde_accepts(json));
    }

    #[test]
    fn the_error_says_what_is_wrong() {
        assert_eq!(check(b"[1]"), Err(EnvelopeError::NotAnObject));
        assert_eq!(check(br#"{"a":1}"#), Err(EnvelopeError::NoOutputs));
        assert_eq!(check(br#"{"outputs":1}"#), Err(EnvelopeError::NoOutputs));
        assert_eq!(
            check(br#"{"outputs":[1,,]}"#),
            Err(EnvelopeError::Syntax(14))
        );
        assert_eq!(check(b"{"), Err(EnvelopeError::Syntax(1)));
    }

    #[test]
    fn deep_nesting_passes_as_in_serde_and_needs_no_stack() {
        for depth in [1, 63, 64, 65, 127, 128, 129, 300, 100_000] {
            let nest = |open: &str, close: &str| open.repeat(depth) + "0" + &close.repeat(depth);
            for inner in [
                nest("[", "]"),
                nest("{\"a\":[", "]}"),
                nest("[{\"b\":", "}]"),
            ] {
                let json = format!(r#"{{"outputs":[{inner}],"x":1}}"#);
                assert_eq!(check(json.as_bytes()), Ok(()), "depth {depth}");
                assert!(serde_accepts(json.as_bytes()), "depth {depth}");
                let cut = &json[..json.len() - 9];
                assert!(check(cut.as_bytes()).is_err(), "depth {depth}");
            }
        }
    }
}
