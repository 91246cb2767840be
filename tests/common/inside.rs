//! Code that runs inside a test's network namespace: a thread joins the namespace, so the
//! sockets it opens (kube clients, probes) live there, beside the berth under test.

use std::path::Path;

/// Runs `f` on a new thread that has joined network namespace `netns`, and returns its result.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Path::new("/run/netns").join(netns);
    std::thread::spawn(move || {
        let file =
            std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("join the network namespace");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs the future `make()` returns on a tokio runtime inside `netns`.
pub fn block_on_in_netns<T, F>(netns: &str, make: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    in_netns(netns, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(make())
    })
}

/// A kube client from a kubeconfig file (call it inside the namespace the server runs in).
pub async fn kube_client(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .expect("kubeconfig is usable");
    kube::Client::try_from(config).expect("kube client")
}
