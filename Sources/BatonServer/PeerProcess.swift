import CProcess
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The process at the other end of a connection, held from accept by a pidfd: it names that
/// process and no other, even once its pid has been handed to another one, so asking whether
/// it has exited is never answered for a stranger.
///
/// Linux only (5.3 and later); elsewhere, and for a peer with no pid (another pid
/// namespace), there is none, and leases wait out their period as before.
struct PeerProcess: Sendable {
    let pid: Int32
    private let descriptor: Int32

    /// After a connection closes, when to look whether its process has exited, in
    /// milliseconds from the close. A killed process closes its sockets a moment before
    /// the kernel marks it exited; one still alive after the last look closed its
    /// connection for another reason (a reconnect, a batond restart) and keeps its leases.
    static let looks: [Int64] = [0, 1, 5, 20, 50, 100, 250, 500]

    /// Opens the pidfd; `nil` where the kernel cannot.
    init?(pid: Int32) {
        #if os(Linux)
        guard pid > 0 else { return nil }
        let descriptor = baton_pidfd_open(pid)
        guard descriptor >= 0 else { return nil }
        self.pid = pid
        self.descriptor = descriptor
        #else
        return nil
        #endif
    }

    /// Whether the process has exited: its pidfd polls readable.
    var hasExited: Bool {
        var entry = pollfd(fd: self.descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) > 0
    }

    /// Closes the pidfd. Called once, by whoever holds the value last.
    func close() {
        _ = Glibc.close(self.descriptor)
    }

    /// Looks at the times in ``looks`` whether the process has exited, calls `exited` if it
    /// has, and closes the pidfd either way.
    func watchExit(on loop: any EventLoop, look: Int = 0, then exited: @escaping @Sendable () -> Void) {
        if self.hasExited {
            self.close()
            return exited()
        }
        guard look + 1 < Self.looks.count else { return self.close() }
        loop.scheduleTask(in: .milliseconds(Self.looks[look + 1] - Self.looks[look])) {
            self.watchExit(on: loop, look: look + 1, then: exited)
        }
    }
}
