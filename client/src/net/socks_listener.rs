//! The SOCKS listener (DESIGN.md §4 "Client proxy"): accepts on loopback,
//! runs the sans-IO handshake per connection with a time-out, asks the
//! circuit manager for a stream, replies, and pumps bytes. A bad or
//! stalled connection closes only itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::debug;

use crate::circmgr::Client;
use crate::error::ClientError;
use crate::socks::{reply_failure, reply_success, SocksHandshake, Step};

/// Most SOCKS connections served at once.
pub const MAX_SOCKS_CONNECTIONS: usize = 1024;
/// Time allowed for the SOCKS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve SOCKS on `listener` until `shutdown` flips to true.
pub async fn serve(client: Client, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_SOCKS_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((socket, _peer)) = accepted else { continue };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else { continue };
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handle(client, socket).await {
                debug!(error = %e, "SOCKS connection ended with an error");
            }
        });
    }
}

/// One SOCKS connection.
async fn handle(client: Client, mut socket: TcpStream) -> Result<(), ClientError> {
    socket.set_nodelay(true)?;
    let request = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut socket)).await {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ClientError::Timeout("SOCKS handshake")),
    };
    match client.connect(request.target, request.port, request.auth).await {
        Ok(stream) => {
            socket.write_all(&reply_success(request.version)).await?;
            stream.pump(socket).await;
            Ok(())
        }
        Err(e) => {
            let reason = match &e {
                ClientError::StreamEnded(reason) => Some(*reason),
                _ => None,
            };
            socket.write_all(&reply_failure(request.version, reason)).await?;
            Err(e)
        }
    }
}

/// Run the handshake; `None` if it was refused (the reply was sent).
async fn handshake(socket: &mut TcpStream) -> Result<Option<crate::socks::SocksRequest>, ClientError> {
    let mut hs = SocksHandshake::new();
    let mut buf = Vec::with_capacity(512);
    loop {
        let (used, step) = hs.handle(&buf).map_err(|_| ClientError::Internal("malformed SOCKS handshake"))?;
        buf.drain(..used);
        match step {
            Step::NeedMore => {
                if buf.len() > 1024 || socket.read_buf(&mut buf).await? == 0 {
                    return Ok(None);
                }
            }
            Step::Send(bytes) => socket.write_all(&bytes).await?,
            Step::Refuse(bytes) => {
                socket.write_all(&bytes).await?;
                return Ok(None);
            }
            Step::Request(request) => return Ok(Some(request)),
        }
    }
}
