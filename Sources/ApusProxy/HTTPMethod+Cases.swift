import NIOHTTP1

extension HTTPMethod {
    /// Whether this is `HEAD`. Matched by case: `==` on `HTTPMethod` resolves to
    /// the `RawRepresentable` operator, which builds and compares raw value strings,
    /// and these checks run once per response.
    @inlinable public var isHEAD: Bool {
        if case .HEAD = self { return true }
        return false
    }
}
