import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Replicas found by DNS: every address a name resolves to, on one port. A Kubernetes
/// headless Service (`clusterIP: None`) resolves to the addresses of its ready pods, so the
/// router follows pods as they come, go and pass their readiness probes, with no access to
/// the Kubernetes API.
public struct ReplicaDiscovery: Sendable, Equatable {
    public let host: String
    public let port: Int

    /// `name:port`, as `--replicas-from-dns` takes it.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        let host = String(text[..<colon])
        guard !host.isEmpty, !host.contains("/") else { return nil }
        self.host = host
        self.port = port
    }

    /// The base URLs of the addresses `host` resolves to now, sorted; nil when resolving
    /// fails (the caller keeps the replicas it had: a DNS hiccup is no reason to drop them).
    public func resolve() -> [String]? {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &result)
        // No such name (a Service with no ready pod) is an answer: no replicas.
        if status == EAI_NONAME { return [] }
        guard status == 0 else { return nil }
        defer { freeaddrinfo(result) }
        var urls = Set<String>()
        var node = result
        while let info = node?.pointee {
            var name = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(info.ai_addr, info.ai_addrlen, &name, socklen_t(name.count), nil, 0, NI_NUMERICHOST) == 0 {
                let address = String(cString: name)
                urls.insert(info.ai_family == AF_INET6 ? "http://[\(address)]:\(port)" : "http://\(address):\(port)")
            }
            node = info.ai_next
        }
        return urls.sorted()
    }
}
