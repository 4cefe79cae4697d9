//! The SOCKS server handshake, sans-IO (RFC 1928, RFC 1929, SOCKS4/4a).
//!
//! Feed bytes to [`SocksHandshake::handle`]; it answers with a [`Step`]:
//! send these bytes and continue, need more bytes, or here is the request.
//! Host names are passed on to the exit, never resolved here. Unsupported
//! commands (BIND, UDP ASSOCIATE) get reply 0x07 from the caller through
//! [`Step::Refuse`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lamina_proto::msg::{EndReason, Target};

/// Longest SOCKS4 user id or host name we accept.
const MAX_FIELD: usize = 255;

/// Why a SOCKS handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocksError {
    /// The client sent something that is not SOCKS.
    #[error("malformed SOCKS handshake: {0}")]
    Malformed(&'static str),
    /// The client offered no method we accept.
    #[error("no acceptable authentication method")]
    NoMethod,
}

/// A CONNECT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksRequest {
    /// SOCKS version (4 or 5).
    pub version: u8,
    /// Destination.
    pub target: Target,
    /// Port.
    pub port: u16,
    /// Credentials, used for stream isolation (user, password).
    pub auth: Option<(Vec<u8>, Vec<u8>)>,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Need more bytes.
    NeedMore,
    /// Send these bytes, then keep feeding.
    Send(Vec<u8>),
    /// The request is complete; connect, then send [`reply_success`] or
    /// [`reply_failure`].
    Request(SocksRequest),
    /// Send these bytes and close (unsupported command, bad auth).
    Refuse(Vec<u8>),
}

/// Handshake states.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the first bytes.
    Start,
    /// SOCKS5: greeting done, waiting for username/password.
    Auth,
    /// SOCKS5: waiting for the request (with credentials if any).
    Request(Option<(Vec<u8>, Vec<u8>)>),
    /// Finished.
    Done,
}

/// The server side of one SOCKS handshake.
#[derive(Debug)]
pub struct SocksHandshake {
    /// Where we are.
    state: State,
}

impl Default for SocksHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl SocksHandshake {
    /// A fresh handshake.
    pub fn new() -> Self {
        Self { state: State::Start }
    }

    /// Feed the bytes received so far (unconsumed); returns how many were
    /// consumed and the next step.
    pub fn handle(&mut self, input: &[u8]) -> Result<(usize, Step), SocksError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => match input.first() {
                None => {
                    self.state = State::Start;
                    Ok((0, Step::NeedMore))
                }
                Some(5) => self.greeting(input),
                Some(4) => self.socks4(input),
                Some(_) => Err(SocksError::Malformed("unknown SOCKS version")),
            },
            State::Auth => self.auth(input),
            State::Request(auth) => self.request(input, auth),
            State::Done => Err(SocksError::Malformed("bytes after the request")),
        }
    }

    /// SOCKS5 greeting: version, methods.
    fn greeting(&mut self, input: &[u8]) -> Result<(usize, Step), SocksError> {
        let Some(&n) = input.get(1) else { return self.more(State::Start) };
        let n = usize::from(n);
        let Some(methods) = input.get(2..2 + n) else { return self.more(State::Start) };
        if n == 0 {
            return Err(SocksError::Malformed("no methods"));
        }
        // Username/password if offered (it selects an isolation class), else none.
        if methods.contains(&0x02) {
            self.state = State::Auth;
            Ok((2 + n, Step::Send(vec![5, 0x02])))
        } else if methods.contains(&0x00) {
            self.state = State::Request(None);
            Ok((2 + n, Step::Send(vec![5, 0x00])))
        } else {
            self.state = State::Done;
            Ok((2 + n, Step::Refuse(vec![5, 0xff])))
        }
    }

    /// RFC 1929 username/password sub-negotiation. Any credentials are
    /// accepted: they only choose a stream-isolation class.
    fn auth(&mut self, input: &[u8]) -> Result<(usize, Step), SocksError> {
        let Some(&ver) = input.first() else { return self.more(State::Auth) };
        if ver != 0x01 {
            return Err(SocksError::Malformed("bad auth version"));
        }
        let Some(&ulen) = input.get(1) else { return self.more(State::Auth) };
        let ulen = usize::from(ulen);
        let Some(&plen) = input.get(2 + ulen) else { return self.more(State::Auth) };
        let plen = usize::from(plen);
        let Some(pass) = input.get(3 + ulen..3 + ulen + plen) else { return self.more(State::Auth) };
        let user = input[2..2 + ulen].to_vec();
        self.state = State::Request(Some((user, pass.to_vec())));
        Ok((3 + ulen + plen, Step::Send(vec![0x01, 0x00])))
    }

    /// SOCKS5 request.
    fn request(&mut self, input: &[u8], auth: Option<(Vec<u8>, Vec<u8>)>) -> Result<(usize, Step), SocksError> {
        let Some(header) = input.get(..4) else { return self.more(State::Request(auth)) };
        if header[0] != 5 {
            return Err(SocksError::Malformed("bad request version"));
        }
        let (cmd, atyp) = (header[1], header[3]);
        let (target, used) = match atyp {
            0x01 => match input.get(4..8) {
                Some(b) => (Target::Ip(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))), 8),
                None => return self.more(State::Request(auth)),
            },
            0x04 => match input.get(4..20) {
                Some(b) => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(b);
                    (Target::Ip(IpAddr::V6(Ipv6Addr::from(octets))), 20)
                }
                None => return self.more(State::Request(auth)),
            },
            0x03 => {
                let Some(&len) = input.get(4) else { return self.more(State::Request(auth)) };
                let len = usize::from(len);
                let Some(name) = input.get(5..5 + len) else { return self.more(State::Request(auth)) };
                (Target::Hostname(hostname(name)?), 5 + len)
            }
            _ => {
                self.state = State::Done;
                return Ok((input.len(), Step::Refuse(reply5(0x08))));
            }
        };
        let Some(port) = input.get(used..used + 2) else { return self.more(State::Request(auth)) };
        let port = u16::from_be_bytes([port[0], port[1]]);
        self.state = State::Done;
        if cmd != 0x01 {
            // BIND (0x02) and UDP ASSOCIATE (0x03) are not supported.
            return Ok((used + 2, Step::Refuse(reply5(0x07))));
        }
        Ok((used + 2, Step::Request(SocksRequest { version: 5, target, port, auth })))
    }

    /// SOCKS4 and 4a: `4 | cmd | port | ip | userid\0 [| host\0]`.
    fn socks4(&mut self, input: &[u8]) -> Result<(usize, Step), SocksError> {
        let Some(h) = input.get(..8) else { return self.more(State::Start) };
        let cmd = h[1];
        let port = u16::from_be_bytes([h[2], h[3]]);
        let ip = Ipv4Addr::new(h[4], h[5], h[6], h[7]);
        let Some(user_end) = find_nul(&input[8..]) else { return self.more_bounded(input.len() - 8) };
        let user = input[8..8 + user_end].to_vec();
        let mut used = 8 + user_end + 1;
        // SOCKS4a: 0.0.0.x with x != 0 means a host name follows.
        let target = if h[4..7] == [0, 0, 0] && h[7] != 0 {
            let Some(name_end) = find_nul(&input[used..]) else { return self.more_bounded(input.len() - used) };
            let name = hostname(&input[used..used + name_end])?;
            used += name_end + 1;
            Target::Hostname(name)
        } else {
            Target::Ip(IpAddr::V4(ip))
        };
        self.state = State::Done;
        if cmd != 0x01 {
            return Ok((used, Step::Refuse(reply4(false))));
        }
        let auth = if user.is_empty() { None } else { Some((user, Vec::new())) };
        Ok((used, Step::Request(SocksRequest { version: 4, target, port, auth })))
    }

    /// Need more bytes; stay in `state`.
    fn more(&mut self, state: State) -> Result<(usize, Step), SocksError> {
        self.state = state;
        Ok((0, Step::NeedMore))
    }

    /// Need more bytes of a NUL-terminated SOCKS4 field, unless it is too long.
    fn more_bounded(&mut self, field_so_far: usize) -> Result<(usize, Step), SocksError> {
        if field_so_far > MAX_FIELD {
            return Err(SocksError::Malformed("SOCKS4 field too long"));
        }
        self.more(State::Start)
    }
}

/// Position of the first NUL.
fn find_nul(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == 0)
}

/// A host name must be non-empty printable ASCII.
fn hostname(bytes: &[u8]) -> Result<String, SocksError> {
    if bytes.is_empty() || bytes.len() > MAX_FIELD || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(SocksError::Malformed("bad host name"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| SocksError::Malformed("bad host name"))
}

/// A SOCKS5 reply with `code` and an all-zero IPv4 bound address.
fn reply5(code: u8) -> Vec<u8> {
    vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// A SOCKS4 reply.
fn reply4(granted: bool) -> Vec<u8> {
    vec![0, if granted { 0x5a } else { 0x5b }, 0, 0, 0, 0, 0, 0]
}

/// The success reply for `version`.
pub fn reply_success(version: u8) -> Vec<u8> {
    if version == 4 {
        reply4(true)
    } else {
        reply5(0x00)
    }
}

/// The failure reply for `version` and the exit's END reason (spec §7.4).
pub fn reply_failure(version: u8, reason: Option<EndReason>) -> Vec<u8> {
    if version == 4 {
        return reply4(false);
    }
    reply5(match reason {
        Some(EndReason::ExitPolicy | EndReason::NotExit) => 0x02,
        Some(EndReason::NoRoute) => 0x03,
        Some(EndReason::ResolveFailed) => 0x04,
        Some(EndReason::ConnectRefused) => 0x05,
        Some(EndReason::Timeout) => 0x06,
        _ => 0x01,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Vec<Step> {
        let mut hs = SocksHandshake::new();
        let mut steps = Vec::new();
        let mut pos = 0;
        loop {
            let (used, step) = hs.handle(&bytes[pos..]).unwrap();
            pos += used;
            let done = matches!(step, Step::NeedMore | Step::Request(_) | Step::Refuse(_));
            steps.push(step);
            if done {
                return steps;
            }
        }
    }

    #[test]
    fn socks5_domain_connect_without_auth() {
        let mut bytes = vec![5, 1, 0, 5, 1, 0, 3, 9];
        bytes.extend_from_slice(b"localhost");
        bytes.extend_from_slice(&80u16.to_be_bytes());
        let steps = run(&bytes);
        assert_eq!(steps[0], Step::Send(vec![5, 0]));
        assert_eq!(
            steps[1],
            Step::Request(SocksRequest {
                version: 5,
                target: Target::Hostname("localhost".into()),
                port: 80,
                auth: None
            })
        );
    }

    #[test]
    fn socks5_username_password_and_ipv6() {
        let mut bytes = vec![5, 2, 0, 2, 1, 1, b'u', 2, b'p', b'w', 5, 1, 0, 4];
        bytes.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        bytes.extend_from_slice(&443u16.to_be_bytes());
        let steps = run(&bytes);
        assert_eq!(steps[0], Step::Send(vec![5, 2]));
        assert_eq!(steps[1], Step::Send(vec![1, 0]));
        let Step::Request(req) = &steps[2] else { panic!("{steps:?}") };
        assert_eq!(req.auth, Some((b"u".to_vec(), b"pw".to_vec())));
        assert_eq!(req.target, Target::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn bind_and_udp_get_0x07_and_unknown_atyp_0x08() {
        for cmd in [2u8, 3] {
            let steps = run(&[5, 1, 0, 5, cmd, 0, 1, 127, 0, 0, 1, 0, 80]);
            assert_eq!(steps[1], Step::Refuse(vec![5, 7, 0, 1, 0, 0, 0, 0, 0, 0]));
        }
        let steps = run(&[5, 1, 0, 5, 1, 0, 9, 1, 2]);
        assert_eq!(steps[1], Step::Refuse(reply5(8)));
    }

    #[test]
    fn socks4_and_4a() {
        let steps = run(&[4, 1, 0, 80, 127, 0, 0, 1, b'a', 0]);
        assert!(
            matches!(&steps[0], Step::Request(r) if r.version == 4 && r.target == Target::Ip("127.0.0.1".parse().unwrap()))
        );
        let mut bytes = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
        bytes.extend_from_slice(b"example.org\0");
        let steps = run(&bytes);
        assert!(matches!(&steps[0], Step::Request(r) if r.target == Target::Hostname("example.org".into())));
    }

    #[test]
    fn garbage_and_partial_input() {
        assert!(SocksHandshake::new().handle(b"GET / HTTP/1.1\r\n").is_err());
        assert_eq!(SocksHandshake::new().handle(&[5]).unwrap(), (0, Step::NeedMore));
        assert_eq!(SocksHandshake::new().handle(&[5, 1, 0x80]).unwrap().1, Step::Refuse(vec![5, 0xff]));
        let mut long = vec![4, 1, 0, 80, 1, 2, 3, 4];
        long.extend(std::iter::repeat_n(b'a', 400));
        assert!(SocksHandshake::new().handle(&long).is_err());
    }

    #[test]
    fn failure_codes_follow_end_reasons() {
        assert_eq!(reply_failure(5, Some(EndReason::ConnectRefused))[1], 0x05);
        assert_eq!(reply_failure(5, Some(EndReason::ExitPolicy))[1], 0x02);
        assert_eq!(reply_failure(5, Some(EndReason::ResolveFailed))[1], 0x04);
        assert_eq!(reply_failure(5, Some(EndReason::Timeout))[1], 0x06);
        assert_eq!(reply_failure(5, None)[1], 0x01);
        assert_eq!(reply_failure(4, None)[1], 0x5b);
    }
}
