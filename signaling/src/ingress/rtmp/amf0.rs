//! AMF0 (Adobe's Action Message Format, version 0): the encoding of RTMP's command and data
//! messages (`connect`, `publish`, `onStatus`, `@setDataFrame`). Only what RTMP encoders
//! send is decoded: numbers, booleans, strings, objects, null/undefined, ECMA and strict
//! arrays, dates and long strings. Anything else is an error, never a panic, and nesting
//! is bounded so that a hostile message cannot exhaust the stack.

/// One AMF0 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Amf {
    Number(f64),
    Bool(bool),
    String(String),
    /// An object or an ECMA array: properties in the order they came.
    Object(Vec<(String, Amf)>),
    Null,
    Undefined,
    Array(Vec<Amf>),
}

impl Amf {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object.
    pub fn get(&self, key: &str) -> Option<&Amf> {
        match self {
            Amf::Object(props) => props.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// `Object` from string keys, for replies.
    pub fn object(props: &[(&str, Amf)]) -> Amf {
        Amf::Object(
            props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }
}

/// Why an AMF0 payload did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmfError(pub &'static str);

impl std::fmt::Display for AmfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AMF0: {}", self.0)
    }
}

/// Deepest nesting of objects and arrays accepted.
const MAX_DEPTH: usize = 16;
/// Most elements announced by an array that are believed before reading them.
const MAX_PREALLOC: usize = 64;

/// Decodes every value of a payload.
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<Amf>, AmfError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(decode(&mut buf, 0)?);
    }
    Ok(out)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], AmfError> {
    if buf.len() < n {
        return Err(AmfError("truncated"));
    }
    let (a, b) = buf.split_at(n);
    *buf = b;
    Ok(a)
}

fn u16_of(buf: &mut &[u8]) -> Result<usize, AmfError> {
    let b = take(buf, 2)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

fn u32_of(buf: &mut &[u8]) -> Result<u32, AmfError> {
    let b = take(buf, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn string_of(buf: &mut &[u8], n: usize) -> Result<String, AmfError> {
    let b = take(buf, n)?;
    Ok(String::from_utf8_lossy(b).into_owned())
}

/// Properties up to the end marker (an empty key and 0x09).
fn props(buf: &mut &[u8], depth: usize) -> Result<Vec<(String, Amf)>, AmfError> {
    let mut out = Vec::new();
    loop {
        let n = u16_of(buf)?;
        if n == 0 {
            if take(buf, 1)? == [0x09] {
                return Ok(out);
            }
            return Err(AmfError(
                "empty property name without the object end marker",
            ));
        }
        let key = string_of(buf, n)?;
        let value = decode(buf, depth + 1)?;
        out.push((key, value));
    }
}

fn decode(buf: &mut &[u8], depth: usize) -> Result<Amf, AmfError> {
    if depth > MAX_DEPTH {
        return Err(AmfError("nested too deeply"));
    }
    let marker = take(buf, 1)?[0];
    Ok(match marker {
        0x00 => {
            let b = take(buf, 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Amf::Number(f64::from_be_bytes(a))
        }
        0x01 => Amf::Bool(take(buf, 1)?[0] != 0),
        0x02 => {
            let n = u16_of(buf)?;
            Amf::String(string_of(buf, n)?)
        }
        0x03 => Amf::Object(props(buf, depth)?),
        0x05 => Amf::Null,
        0x06 => Amf::Undefined,
        0x08 => {
            let _count = u32_of(buf)?;
            Amf::Object(props(buf, depth)?)
        }
        0x0A => {
            let count = u32_of(buf)? as usize;
            let mut items = Vec::with_capacity(count.min(MAX_PREALLOC));
            for _ in 0..count {
                items.push(decode(buf, depth + 1)?);
            }
            Amf::Array(items)
        }
        0x0B => {
            let b = take(buf, 10)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[..8]);
            Amf::Number(f64::from_be_bytes(a))
        }
        0x0C => {
            let n = u32_of(buf)? as usize;
            Amf::String(string_of(buf, n)?)
        }
        _ => return Err(AmfError("unsupported value type")),
    })
}

/// Appends the encoding of `v`.
pub fn encode(v: &Amf, out: &mut Vec<u8>) {
    match v {
        Amf::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf::Bool(b) => out.extend_from_slice(&[0x01, u8::from(*b)]),
        Amf::String(s) => {
            if s.len() > usize::from(u16::MAX) {
                out.push(0x0C);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            } else {
                out.push(0x02);
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(s.as_bytes());
        }
        Amf::Object(props) => {
            out.push(0x03);
            for (k, v) in props {
                let k = &k.as_bytes()[..k.len().min(usize::from(u16::MAX))];
                out.extend_from_slice(&(k.len() as u16).to_be_bytes());
                out.extend_from_slice(k);
                encode(v, out);
            }
            out.extend_from_slice(&[0, 0, 0x09]);
        }
        Amf::Null => out.push(0x05),
        Amf::Undefined => out.push(0x06),
        Amf::Array(items) => {
            out.push(0x0A);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for i in items {
                encode(i, out);
            }
        }
    }
}

/// The encoding of several values, one after the other (a command message).
pub fn encode_all(values: &[Amf]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        encode(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let v = vec![
            Amf::String("connect".into()),
            Amf::Number(1.0),
            Amf::object(&[
                ("app", Amf::String("live".into())),
                ("fpad", Amf::Bool(false)),
                ("nested", Amf::object(&[("x", Amf::Null)])),
            ]),
            Amf::Null,
            Amf::Undefined,
            Amf::Array(vec![Amf::Number(2.5)]),
        ];
        assert_eq!(decode_all(&encode_all(&v)).unwrap(), v);
    }

    #[test]
    fn ecma_arrays_date_and_long_strings_decode() {
        let mut b = vec![0x08, 0, 0, 0, 1, 0, 5];
        b.extend_from_slice(b"width");
        b.push(0x00);
        b.extend_from_slice(&640.0f64.to_be_bytes());
        b.extend_from_slice(&[0, 0, 9]);
        b.push(0x0B);
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&[0x0C, 0, 0, 0, 2, b'o', b'k']);
        let v = decode_all(&b).unwrap();
        assert_eq!(v[0].get("width"), Some(&Amf::Number(640.0)));
        assert_eq!(v[1], Amf::Number(0.0));
        assert_eq!(v[2], Amf::String("ok".into()));
    }

    #[test]
    fn bad_input_is_an_error() {
        for b in [
            &[0x02, 0, 9, b'a'][..],
            &[0x00, 1, 2],
            &[0x03, 0, 1, b'k'],
            &[0x03, 0, 0, 0x07],
            &[0x11],
            &[0x0A, 0xFF, 0xFF, 0xFF, 0xFF],
        ] {
            assert!(decode_all(b).is_err(), "{b:?}");
        }
        let deep = [0x0A, 0, 0, 0, 1].repeat(100);
        assert!(decode_all(&deep).is_err());
    }
}
