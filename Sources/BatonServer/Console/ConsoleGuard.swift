/// The console's defences for a browser: which hosts it answers to, and which POSTs may act.
///
/// A form on another site can make a browser POST here, and a name that an attacker's DNS
/// points at 127.0.0.1 can make a browser treat this console as the attacker's own site.
/// So an action must carry the token from a page of this console (another site cannot read
/// one), must not come from another site by the browser's own `Origin` and
/// `Sec-Fetch-Site` headers, and, while the console listens on loopback only, must name a
/// loopback host.
struct ConsoleGuard: Sendable {
    /// Made at start from the system's random source; every form of the console carries it.
    let token: String
    /// Set when the listener is bound to loopback: then the `Host` must be a loopback name.
    let loopbackOnly: Bool

    init(token: String = ConsoleGuard.randomToken(), listeningOn host: String) {
        self.token = token
        self.loopbackOnly = Self.isLoopback(host: host)
    }

    static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in
            let text = String(generator.next() as UInt64, radix: 16)
            return String(repeating: "0", count: 16 - text.count) + text
        }.joined()
    }

    /// Whether a request naming `host` (the `Host` header, port included) may be served.
    func accepts(host: String?) -> Bool {
        guard self.loopbackOnly else { return true }
        guard let host else { return false }
        return Self.isLoopback(host: Self.hostName(of: host))
    }

    /// Why a POST may not act, or `nil` when it may.
    func refusal(host: String?, origin: String?, fetchSite: String?, formToken: String?) -> String? {
        guard self.accepts(host: host) else { return "the Host header does not name this console" }
        if let fetchSite, fetchSite != "same-origin", fetchSite != "none" {
            return "the browser says the request came from another site (Sec-Fetch-Site: \(fetchSite))"
        }
        if let origin, let host, origin != "http://\(host)" {
            return "the request came from another origin (\(origin))"
        }
        guard let formToken, Self.constantTimeEqual(formToken, self.token) else {
            return "the form's token is missing or stale: reload the page"
        }
        return nil
    }

    /// `localhost`, `127.x.x.x` and `::1`, with or without brackets.
    static func isLoopback(host: String) -> Bool {
        let name = host.lowercased()
        return name == "localhost" || name.hasSuffix(".localhost") || name.hasPrefix("127.") || name == "::1" || name == "[::1]"
    }

    /// `example:9464` → `example`, `[::1]:9464` → `[::1]`.
    static func hostName(of header: String) -> String {
        if header.hasPrefix("["), let close = header.firstIndex(of: "]") {
            return String(header[...close])
        }
        return String(header.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    }

    private static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
