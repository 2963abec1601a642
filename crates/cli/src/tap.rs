//! `evapi tap`: a terminal client for an event socket.

use anyhow::Context;
use bytes::BytesMut;
use evapi::codec::NetstringCodec;
use std::io::Write;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// Options of `evapi tap`.
#[derive(Debug, clap::Args)]
pub struct TapArgs {
    /// Event socket to connect to: IPv4:port, [IPv6]:port or host:port.
    #[arg(default_value = "127.0.0.1:8448")]
    addr: String,
    /// Raw mode, for a server with netstring_format = 0: print what each
    /// read returns, send each line as it is (without its newline).
    #[arg(long)]
    raw: bool,
    /// Send this message right after connecting (repeatable), e.g. a
    /// message your script answers with set_tag().
    #[arg(long, value_name = "MSG")]
    send: Vec<String>,
    /// Send this token first, for a server with `[evapi] auth_token` set
    /// (also read from the environment variable EVAPI_TOKEN, which keeps it
    /// out of the process list).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "EVAPI_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Exit after receiving this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Largest message accepted from the server, bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_frame: usize,
    /// Connect with TLS (for a server with tls_cert set); needs --ca.
    #[arg(long, requires = "ca")]
    tls: bool,
    /// PEM file of the CA(s) that signed the server's certificate.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for a server with tls_client_ca set.
    #[arg(long, value_name = "FILE", requires_all = ["key", "tls"])]
    cert: Option<std::path::PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// Name to check the server's certificate against (default: the host
    /// part of the address).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
}

pub fn tap(args: TapArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: TapArgs) -> anyhow::Result<()> {
    let stream = TcpStream::connect(&args.addr)
        .await
        .with_context(|| format!("cannot connect to the event socket at {}", args.addr))?;
    let (peer, local) = (stream.peer_addr()?, stream.local_addr()?);
    if !args.tls {
        eprintln!("connected to {peer} (from {local})");
        let (rd, wr) = stream.into_split();
        return session(&args, rd, wr).await;
    }
    let ca = args.ca.as_deref().context("--tls needs --ca")?;
    let cert = args.cert.as_deref().zip(args.key.as_deref());
    let config = evapi::tls::client_config(ca, cert)?;
    let host = match &args.server_name {
        Some(n) => n.clone(),
        None => args
            .addr
            .rsplit_once(':')
            .map_or(args.addr.clone(), |(h, _)| h.to_string()),
    };
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(evapi::tls::server_name(&host)?, stream)
        .await
        .with_context(|| format!("TLS handshake with {peer} (as {host:?}) failed"))?;
    eprintln!("connected to {peer} with TLS (from {local})");
    let (rd, wr) = tokio::io::split(tls);
    session(&args, rd, wr).await
}

async fn session<R, W>(args: &TapArgs, mut rd: R, mut wr: W) -> anyhow::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let frame = |msg: &[u8]| {
        if args.raw {
            bytes::Bytes::copy_from_slice(msg)
        } else {
            NetstringCodec::frame(msg)
        }
    };
    for msg in args.token.iter().chain(&args.send) {
        wr.write_all(&frame(msg.as_bytes())).await?;
    }

    let raw = args.raw;
    let sender = tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.is_empty() {
                continue;
            }
            let bytes = if raw {
                bytes::Bytes::from(line.into_bytes())
            } else {
                NetstringCodec::frame(line.as_bytes())
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        // stdin closed: keep the connection open for reading.
        std::future::pending::<()>().await;
    });

    let mut codec = NetstringCodec::new(args.max_frame);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut received = 0u64;
    let stdout = std::io::stdout();
    let result = loop {
        if args.count.is_some_and(|n| received >= n) {
            break Ok(());
        }
        let n = match rd.read_buf(&mut buf).await {
            Ok(0) => {
                eprintln!("the server closed the connection");
                break Ok(());
            }
            Ok(n) => n,
            Err(e) => break Err(anyhow::anyhow!("read failed: {e}")),
        };
        let mut out = stdout.lock();
        if raw {
            let chunk = buf.split_to(n);
            out.write_all(&chunk)?;
            if !chunk.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
            received += 1;
        } else {
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(msg)) => {
                        out.write_all(&msg)?;
                        out.write_all(b"\n")?;
                        received += 1;
                        if args.count.is_some_and(|c| received >= c) {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        out.flush()?;
                        sender.abort();
                        return Err(anyhow::anyhow!("the server sent an invalid netstring: {e}"));
                    }
                }
            }
        }
        out.flush()?;
    };
    sender.abort();
    result
}
