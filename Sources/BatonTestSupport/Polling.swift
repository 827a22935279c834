import Foundation

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
///
/// Tests wait for a condition the server must reach instead of sleeping a fixed time and
/// hoping it was long enough.
///
/// - Returns: whether the condition held before the time ran out.
public func waitUntil(seconds: Double = 20, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        if try condition() { return true }
        if Date() >= deadline { return false }
        usleep(20_000)
    }
}
