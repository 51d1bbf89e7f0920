//! A TCP relay that a test can cut and heal.

use tokio::sync::watch;

/// Starts a relay on a free loopback port to `target` (`host:port`). Sending `true` on the
/// answered sender cuts it: open connections are closed and new ones are closed at once;
/// sending `false` heals it for new connections.
pub async fn relay_to(target: &str) -> (u16, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let port = listener.local_addr().expect("a bound address").port();
    let (cut, watch) = watch::channel(false);
    let target = target.to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                return;
            };
            let mut watch = watch.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = watch.wait_for(|cut| *cut) => {}
                }
            });
        }
    });
    (port, cut)
}
