//! Bytes on each link, from the kernel's per-socket TCP counters.
//!
//! Why not `/proc/PID/io`: its `rchar`/`wchar` only count `read`/`write`-
//! family syscalls, and Rust's sockets (std, mio, tokio) read with `recv`,
//! which is not counted — an S2 `rchar` delta is 0 however much S1 sends it.
//!
//! Instead this asks the kernel (netlink `SOCK_DIAG`, what `ss -ti` uses)
//! for `tcp_info` of every TCP socket: `tcpi_bytes_acked` (payload bytes
//! sent and acknowledged) and `tcpi_bytes_received`. These are TCP payload
//! bytes: exactly what the processes wrote into their sockets, so TLS
//! records and HTTP/2 + gRPC framing are included, TCP/IP headers are not.
//! Sockets are attributed to a process through its `/proc/PID/fd` links
//! (`socket:[INODE]`), so this works for processes on this machine only.

use std::collections::HashMap;

/// Payload bytes of one socket so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub sent: u64,
    pub received: u64,
}

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_INFO: u16 = 2;
const NLMSG_HDR: usize = 16;
const INET_DIAG_MSG: usize = 72;
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_ne_bytes(b[o..o + 8].try_into().unwrap())
}

/// Closes the netlink socket on every path.
struct Fd(libc::c_int);
impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}

/// `tcp_info` counters of every TCP socket of one address family, by inode.
fn dump(family: u8, out: &mut HashMap<u64, Counters>) -> Result<(), String> {
    // SAFETY: plain syscalls on a descriptor owned by `fd`; every buffer
    // passed is valid for the length given.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if fd < 0 {
            return Err(format!("netlink socket: {}", std::io::Error::last_os_error()));
        }
        let fd = Fd(fd);
        // nlmsghdr + inet_diag_req_v2 { family, protocol, ext, pad, states, sockid (48 B) }.
        let mut req = [0u8; NLMSG_HDR + 56];
        let len = req.len() as u32;
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        req[6..8].copy_from_slice(&flags.to_ne_bytes());
        req[8..12].copy_from_slice(&1u32.to_ne_bytes());
        req[16] = family;
        req[17] = libc::IPPROTO_TCP as u8;
        req[18] = 1 << (INET_DIAG_INFO - 1);
        req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let sent = libc::sendto(
            fd.0,
            req.as_ptr().cast(),
            req.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        if sent < 0 {
            return Err(format!("netlink sendto: {}", std::io::Error::last_os_error()));
        }
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 0 {
                return Err(format!("netlink recv: {}", std::io::Error::last_os_error()));
            }
            let b = &buf[..n as usize];
            let mut off = 0;
            while off + NLMSG_HDR <= b.len() {
                let len = u32_at(b, off) as usize;
                let ty = u16_at(b, off + 4);
                if len < NLMSG_HDR || off + len > b.len() {
                    break;
                }
                match ty as libc::c_int {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let errno = -(u32_at(b, off + NLMSG_HDR) as i32);
                        return Err(format!("netlink: {}", std::io::Error::from_raw_os_error(errno)));
                    }
                    _ if ty == SOCK_DIAG_BY_FAMILY && len >= NLMSG_HDR + INET_DIAG_MSG => {
                        let m = &b[off + NLMSG_HDR..off + len];
                        let inode = u32_at(m, 68) as u64;
                        let mut a = INET_DIAG_MSG;
                        while a + 4 <= m.len() {
                            let alen = u16_at(m, a) as usize;
                            let aty = u16_at(m, a + 2);
                            if alen < 4 || a + alen > m.len() {
                                break;
                            }
                            let data = &m[a + 4..a + alen];
                            if aty == INET_DIAG_INFO && data.len() >= TCPI_BYTES_RECEIVED + 8 {
                                out.insert(
                                    inode,
                                    Counters {
                                        sent: u64_at(data, TCPI_BYTES_ACKED),
                                        received: u64_at(data, TCPI_BYTES_RECEIVED),
                                    },
                                );
                            }
                            a += align4(alen);
                        }
                    }
                    _ => {}
                }
                off += align4(len);
            }
        }
    }
}

/// Counters of every TCP socket on this machine (IPv4 and IPv6), by inode.
pub fn all_sockets() -> Result<HashMap<u64, Counters>, String> {
    let mut out = HashMap::new();
    dump(libc::AF_INET as u8, &mut out)?;
    // A kernel without IPv6 refuses the second dump; IPv4 alone is fine.
    let _ = dump(libc::AF_INET6 as u8, &mut out);
    Ok(out)
}

/// Inodes of the sockets `pid` (or `"self"`) has open.
pub fn socket_inodes(pid: &str) -> Result<Vec<u64>, String> {
    let dir = format!("/proc/{pid}/fd");
    let rd = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {dir}: {e}"))?;
    Ok(rd
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect())
}

/// The TCP counters of one process's sockets, by inode.
pub fn of_process(pid: &str, all: &HashMap<u64, Counters>) -> Result<HashMap<u64, Counters>, String> {
    Ok(socket_inodes(pid)?.into_iter().filter_map(|i| all.get(&i).map(|c| (i, *c))).collect())
}

/// Bytes moved between two looks at the same process's sockets; a socket
/// opened in between counts from zero (one closed in between is lost).
pub fn delta(before: &HashMap<u64, Counters>, after: &HashMap<u64, Counters>) -> Counters {
    after.iter().fold(Counters::default(), |acc, (i, c)| {
        let b = before.get(i).copied().unwrap_or_default();
        Counters {
            sent: acc.sent + c.sent.saturating_sub(b.sent),
            received: acc.received + c.received.saturating_sub(b.received),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn counts_a_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let before = of_process("self", &all_sockets().unwrap()).unwrap();
        c.write_all(&[7u8; 1000]).unwrap();
        let mut got = [0u8; 1000];
        s.read_exact(&mut got).unwrap();
        s.write_all(&[1u8; 10]).unwrap();
        c.read_exact(&mut got[..10]).unwrap();
        // Both ends are this process: 1010 bytes each way in total. "Sent"
        // is acknowledged bytes, so allow the last ACK a moment to arrive.
        let mut d = Counters::default();
        for _ in 0..50 {
            d = delta(&before, &of_process("self", &all_sockets().unwrap()).unwrap());
            if d.sent == 1010 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(d, Counters { sent: 1010, received: 1010 });
    }
}
