//! The client's address behind trusted proxies: `[server] trusted_proxies`
//! and `client_address_header`.
//!
//! Only when the TCP peer is a trusted proxy is a forwarding header read,
//! and then only the one header the operator named: a proxy that appends
//! to `X-Forwarded-For` passes a client's own `Forwarded` header through
//! untouched, so reading both would let any client choose its address.
//! The header's hops are walked from the right (the hop the nearest proxy
//! appended) past every trusted proxy; the first untrusted hop is the
//! client. A hop that is not an address (`unknown`, an obfuscated RFC 7239
//! node, garbage) ends the walk at the last trusted hop, which is then the
//! address used: never a value a client could have chosen.
//!
//! Formats: `X-Forwarded-For` is the de-facto comma-separated list of
//! addresses (some proxies add a port: `192.0.2.1:4711`, `[2001:db8::1]:4711`);
//! `Forwarded` is RFC 7239 (`for=192.0.2.60;proto=https, for="[2001:db8::17]:4711"`).
//! Header lines of one name are read in order, as one list (RFC 9110 5.3).

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Reads one header line into its hops, left to right (`None`: a hop
/// that is not an address).
type ParseHops = fn(&str) -> Vec<Option<IpAddr>>;

/// Which forwarding header a trusted proxy sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAddressHeader {
    /// `X-Forwarded-For` (nginx, HAProxy, most cloud load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded`, RFC 7239 (Envoy and others can be set to it).
    Forwarded,
}

/// The proxies whose forwarding header is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    /// Networks of trusted proxies (`10.0.0.0/8`, `::1/128`). Empty: no
    /// header is ever read and the client is the TCP peer.
    pub networks: Vec<IpNet>,
    /// The header they set.
    pub header: ClientAddressHeader,
}

impl TrustedProxies {
    /// `true` if `address` (IPv4-mapped IPv6 taken as the IPv4 address it
    /// carries) is in a trusted network.
    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }

    /// The client's address for a request that came from `peer` with
    /// `headers` (see the module's doc for the rules).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let (name, parse): (&str, ParseHops) = match self.header {
            ClientAddressHeader::XForwardedFor => ("x-forwarded-for", parse_x_forwarded_for),
            ClientAddressHeader::Forwarded => ("forwarded", parse_forwarded),
        };
        let mut hops = Vec::new();
        for value in headers.get_all(name) {
            // A header that is not text is no list of addresses: the walk
            // stops at the peer.
            let Ok(text) = value.to_str() else {
                return peer;
            };
            hops.extend(parse(text));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(address) if self.trusts(*address) => client = *address,
                Some(address) => return *address,
                None => return client,
            }
        }
        client
    }
}

/// One hop's text as an address: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:80`. `None` for anything else.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    let bracketed = text.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<IpAddr>()
        .ok()
        .map(|address| address.to_canonical())
}

fn parse_x_forwarded_for(text: &str) -> Vec<Option<IpAddr>> {
    text.split(',')
        .filter(|hop| !hop.trim().is_empty())
        .map(parse_hop)
        .collect()
}

/// RFC 7239 section 4: `forwarded-element *( "," forwarded-element )`,
/// each element `forwarded-pair *( ";" forwarded-pair )`, a pair
/// `token "=" value` with the value a token or a quoted string. Each
/// element is one hop; an element without `for=` is a hop of unknown
/// address.
fn parse_forwarded(text: &str) -> Vec<Option<IpAddr>> {
    split_outside_quotes(text, ',')
        .into_iter()
        .filter(|element| !element.trim().is_empty())
        .map(|element| {
            let mut node = None;
            for pair in split_outside_quotes(element, ';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("for") {
                    let value = value.trim();
                    let value = value
                        .strip_prefix('"')
                        .and_then(|inner| inner.strip_suffix('"'))
                        .unwrap_or(value);
                    node = Some(value.replace('\\', ""));
                }
            }
            node.as_deref().and_then(parse_hop)
        })
        .collect()
}

/// Splits at `separator` except inside double quotes (a backslash escapes
/// the next character there).
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (index, character) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && character == '\\' {
            escaped = true;
        } else if character == '"' {
            quoted = !quoted;
        } else if character == separator && !quoted {
            pieces.push(&text[start..index]);
            start = index + character.len_utf8();
        }
    }
    pieces.push(&text[start..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(header: ClientAddressHeader) -> TrustedProxies {
        TrustedProxies {
            networks: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            header,
        }
    }

    fn check(header: ClientAddressHeader, peer: &str, lines: &[&str], expected: &str) {
        let name = match header {
            ClientAddressHeader::XForwardedFor => "x-forwarded-for",
            ClientAddressHeader::Forwarded => "forwarded",
        };
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(name, line.parse().unwrap());
        }
        let got = proxies(header).client_address(peer.parse().unwrap(), &headers);
        assert_eq!(
            got,
            expected.parse::<IpAddr>().unwrap(),
            "peer {peer}, {name}: {lines:?}"
        );
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right_past_trusted_hops_only() {
        use ClientAddressHeader::XForwardedFor as X;
        // Untrusted peers' headers are ignored, whatever they say.
        check(X, "203.0.113.9", &["198.51.100.1"], "203.0.113.9");
        // A trusted peer without the header is the client.
        check(X, "10.0.0.5", &[], "10.0.0.5");
        check(X, "10.0.0.5", &["198.51.100.1"], "198.51.100.1");
        // A client's spoofed hops on the left are not believed: the
        // rightmost untrusted hop is the one the proxy saw.
        check(X, "10.0.0.5", &["1.1.1.1, 198.51.100.1"], "198.51.100.1");
        check(
            X,
            "10.0.0.5",
            &["1.1.1.1, 198.51.100.1, 10.2.3.4"],
            "198.51.100.1",
        );
        // Several header lines are one list, in order.
        check(X, "10.0.0.5", &["1.1.1.1", "198.51.100.1"], "198.51.100.1");
        // Every hop trusted: the leftmost.
        check(X, "10.0.0.5", &["10.9.9.9, 10.2.3.4"], "10.9.9.9");
        // Ports and brackets.
        check(X, "10.0.0.5", &["198.51.100.1:4711"], "198.51.100.1");
        check(X, "10.0.0.5", &["[2001:db8::1]:4711"], "2001:db8::1");
        check(X, "::1", &["2001:db8::1"], "2001:db8::1");
        // IPv4-mapped peers (a dual-stack listener) are their IPv4 address.
        check(X, "::ffff:10.0.0.5", &["198.51.100.1"], "198.51.100.1");
        check(X, "::ffff:203.0.113.9", &["198.51.100.1"], "203.0.113.9");
        // Garbage right of the client stops the walk at the last trusted hop.
        check(X, "10.0.0.5", &["198.51.100.1, nonsense"], "10.0.0.5");
        check(
            X,
            "10.0.0.5",
            &["198.51.100.1, unknown, 10.2.3.4"],
            "10.2.3.4",
        );
    }

    #[test]
    fn forwarded_follows_rfc_7239() {
        use ClientAddressHeader::Forwarded as F;
        check(F, "10.0.0.5", &["for=198.51.100.1"], "198.51.100.1");
        check(
            F,
            "10.0.0.5",
            &["for=1.1.1.1, for=198.51.100.1;proto=https;by=10.0.0.5"],
            "198.51.100.1",
        );
        check(
            F,
            "10.0.0.5",
            &[r#"for="[2001:db8:cafe::17]:4711""#],
            "2001:db8:cafe::17",
        );
        check(F, "10.0.0.5", &["For=\"198.51.100.1:80\""], "198.51.100.1");
        // A quoted comma does not split elements.
        check(
            F,
            "10.0.0.5",
            &[r#"for=198.51.100.1;x="a,b", for=10.1.1.1"#],
            "198.51.100.1",
        );
        // Obfuscated and unknown nodes end the walk.
        check(
            F,
            "10.0.0.5",
            &["for=198.51.100.1, for=_hidden"],
            "10.0.0.5",
        );
        check(F, "10.0.0.5", &["for=unknown"], "10.0.0.5");
        check(F, "10.0.0.5", &["proto=https"], "10.0.0.5");
        check(F, "203.0.113.9", &["for=198.51.100.1"], "203.0.113.9");
    }

    #[test]
    fn the_header_not_named_is_never_read() {
        let mut headers = HeaderMap::new();
        headers.insert("forwarded", "for=198.51.100.1".parse().unwrap());
        let got = proxies(ClientAddressHeader::XForwardedFor)
            .client_address("10.0.0.5".parse().unwrap(), &headers);
        assert_eq!(got, "10.0.0.5".parse::<IpAddr>().unwrap());
    }
}
