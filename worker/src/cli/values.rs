//! Parsers of flag values whose errors say what a good value looks like (clap prints
//! them as `invalid value 'X' for '--flag': <message>`).

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;

/// A duration such as `90s`, `15m`, `6h` or `30d`.
pub fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("{e}; a duration is a number and a unit, e.g. 90s, 15m, 6h or 30d"))
}

/// A size such as `32MiB` or `1GB`.
pub fn size(raw: &str) -> Result<ByteSize, String> {
    raw.parse()
        .map_err(|_| "not a size; write a number and a unit, e.g. 512KiB, 32MiB or 1GiB".into())
}

/// An address to listen on, `IP:PORT`; `localhost` is taken for 127.0.0.1, the name
/// people type most.
pub fn listen(raw: &str) -> Result<SocketAddr, String> {
    let local = raw
        .strip_prefix("localhost:")
        .map(|port| format!("127.0.0.1:{port}"));
    local.as_deref().unwrap_or(raw).parse().map_err(|_| {
        "not an IP address and port; e.g. 127.0.0.1:5050 (this machine only) or \
         0.0.0.0:5050 (every interface)"
            .into()
    })
}

/// An absolute `http://` or `https://` URL, as given.
pub fn http_url(raw: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| format!("not a URL ({e}); e.g. https://cache.example.org"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err("not an http:// or https:// URL; e.g. https://cache.example.org".into());
    }
    Ok(raw.to_owned())
}

/// A false-positive rate strictly between 0 and 1.
pub fn rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(r) if r > 0.0 && r < 1.0 => Ok(r),
        _ => Err("not a rate strictly between 0 and 1; e.g. 0.01".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_values_parse_and_bad_ones_say_what_is_wanted() {
        assert_eq!(duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        for bad in ["30", "forever", "-1d", ""] {
            let e = duration(bad).unwrap_err();
            assert!(e.contains("e.g. 90s"), "{bad}: {e}");
        }
        assert_eq!(size("32MiB").unwrap().as_u64(), 32 << 20);
        assert_eq!(size("0").unwrap().as_u64(), 0);
        assert!(size("lots").unwrap_err().contains("e.g. 512KiB"));
        assert_eq!(listen("localhost:80").unwrap().to_string(), "127.0.0.1:80");
        assert_eq!(listen("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert!(listen("example.org:80")
            .unwrap_err()
            .contains("0.0.0.0:5050"));
        assert!(listen("127.0.0.1").is_err());
        assert_eq!(http_url("http://x:1/p").unwrap(), "http://x:1/p");
        for bad in ["notaurl", "ftp://x", "http//x", "file:///tmp"] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
        assert_eq!(rate("0.01").unwrap(), 0.01);
        for bad in ["0", "1", "2", "NaN", "x"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }
}
