import NIOCore
import NIOEmbedded
import NIOHTTP2
import Testing

@testable import ApusServer

@Suite("HTTP/2 preface detection")
struct PrefaceDetectorTests {
    @Test func prefaceAndSettingsInOneReadGetASettingsAck() throws {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.addHandler(
            HTTP2PrefaceDetector(
                http1: { _ in Issue.record("took the HTTP/1 path") },
                http2: { channel in
                    _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
                    ) { stream in stream.eventLoop.makeSucceededVoidFuture() }
                }))
        var bytes = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        // An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
        bytes.writeBytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
        try channel.writeInbound(bytes)
        (channel.eventLoop as! EmbeddedEventLoop).run()
        var written = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) { written.writeBuffer(&part) }
        let frames = Array(written.readableBytesView)
        // Our SETTINGS, then a SETTINGS ACK (type 4, flags 1).
        let ack: [UInt8] = [0, 0, 0, 4, 1, 0, 0, 0, 0]
        #expect(frames.count >= 9)
        #expect(Array(frames.suffix(from: frames.count - 9)) == ack || frames.windows(ofCount: 9).contains { Array($0) == ack })
    }
}

extension Array {
    fileprivate func windows(ofCount count: Int) -> [ArraySlice<Element>] {
        guard self.count >= count else { return [] }
        return (0...(self.count - count)).map { self[$0..<($0 + count)] }
    }
}
