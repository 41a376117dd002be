import CoreMetrics
import NIOCore
import NIOHTTP1

/// Where a proxied response goes: the client side of the exchange. The gateway's
/// connection handler implements it for HTTP/1.1 (and HTTP/2 streams, which are
/// turned into the same parts).
public protocol ProxyDownstream: AnyObject {
    /// Writes the backend's response head; making the client's head of it
    /// (`makeDownstreamHead`, or `UpstreamResponseHead.clientHead`) is the downstream's job.
    func proxyWriteHead(_ head: UpstreamResponseHead)
    /// Writes a piece of response body.
    func proxyWriteBody(_ buffer: ByteBuffer)
    /// Ends the response. `requestComplete` says whether the whole request
    /// reached the backend; when it did not, the client connection must close.
    func proxyWriteEnd(_ trailers: HTTPHeaders?, requestComplete: Bool)
    /// Flushes written parts.
    func proxyFlush()
    /// The exchange failed. Before the head was written the client gets a 502 or
    /// 504; after it, the connection can only be closed.
    func proxyFailed(_ error: UpstreamError, headWritten: Bool)
    /// Stops or restarts reading the request body (back-pressure towards the client).
    func proxySetRequestReading(_ enabled: Bool)
    /// Whether the client connection can take more bytes now.
    var proxyDownstreamWritable: Bool { get }
}

/// One request/response exchange with the backend, streaming both bodies with
/// back-pressure: the client is not read while the backend connection is full,
/// and the backend is not read while the client connection is full. Lives on
/// the event loop of the client connection and of its pool.
public final class ProxyExchange: UpstreamDelegate {
    private enum State {
        /// Waiting for a pooled or new connection; body parts are queued (reading is paused).
        case connecting
        /// Request head sent, response head not yet received.
        case awaitingResponse
        /// Response head passed on; streaming the response body.
        case streamingResponse
        /// Response finished or exchange failed; nothing more happens.
        case finished
    }

    private let pool: UpstreamPool
    private let head: UpstreamRequestHead
    private let requestHasBody: Bool
    /// Strong, and let go when the exchange finishes (`finish`); the downstream holds
    /// the exchange until then. Not `weak`: an object referred to weakly gets a side
    /// table, and every retain and release of it (the gateway, at each pipeline hop)
    /// takes the runtime's slow path.
    private var downstream: (any ProxyDownstream)?
    private var state = State.connecting
    private var connection: UpstreamConnection?
    private var queued: [HTTPClientRequestPart] = []
    private var requestComplete = false
    private var requestBodyStarted = false
    private var responseKeepAlive = true
    private var retried = false
    /// Set while `start` waits on the pool: a connection that arrives meanwhile
    /// (a pooled one, or a Unix socket connected at once) is flushed by
    /// `requestReadComplete`, which follows.
    private var connectedInClientRead = false
    /// When the backend must have answered by (set once the request is complete).
    private var responseDeadline: NIODeadline?
    private var lastActivity = NIODeadline.now()
    /// Status the backend answered, for the access log.
    public private(set) var responseStatus: HTTPResponseStatus?
    /// When the response head arrived, for the access log's upstream time.
    public private(set) var responseHeadAt: NIODeadline?

    /// Prepares an exchange; `head` is already rewritten for the backend and encoded.
    public init(pool: UpstreamPool, head: UpstreamRequestHead, requestHasBody: Bool, downstream: any ProxyDownstream) {
        self.pool = pool
        self.head = head
        self.requestHasBody = requestHasBody
        self.downstream = downstream
    }

    /// Gets a connection and sends the request head (and any queued body).
    ///
    /// The gateway calls this, and the request methods below, while it reads the
    /// client's request, and `requestReadComplete` when that read batch is over:
    /// that is where request bytes are flushed, once per batch (head, body and end
    /// of a small request in one write). A connection that arrives later flushes
    /// on its own.
    public func start() {
        connectedInClientRead = true
        if let connection = pool.takeIdle() {
            connected(connection)  // the common case, without a future
        } else {
            acquire(fresh: false)
        }
        connectedInClientRead = false
    }

    /// `fresh`: a new connection, not a pooled one (the retry after a stale one).
    private func acquire(fresh: Bool) {
        downstream?.proxySetRequestReading(false)
        let exchange = NIOLoopBound(self, eventLoop: pool.eventLoop)
        pool.acquire(fresh: fresh).whenComplete { result in
            let exchange = exchange.value
            switch result {
            case .success(let connection): exchange.connected(connection)
            case .failure(let error): exchange.fail(error as? UpstreamError ?? .connectFailed("\(error)"))
            }
        }
    }

    private func connected(_ connection: UpstreamConnection) {
        guard case .connecting = state else {
            pool.release(connection, reusable: true)
            return
        }
        self.connection = connection
        connection.handler.delegate = self
        state = .awaitingResponse
        connection.handler.send(head)
        for part in queued { connection.handler.send(part) }
        queued.removeAll()
        if !connectedInClientRead { connection.handler.flush() }
        touch()
        pool.track(self)
        if requestComplete { armResponseTimer() }
        downstream?.proxySetRequestReading(connection.channel.isWritable)
    }

    // MARK: request side (called by the gateway's connection handler)

    /// A piece of request body from the client.
    public func requestBody(_ buffer: ByteBuffer) {
        requestBodyStarted = true
        touch()
        send(.body(.byteBuffer(buffer)))
    }

    /// The end of the request from the client.
    public func requestEnd(_ trailers: HTTPHeaders?) {
        requestComplete = true
        send(.end(trailers))
        if case .awaitingResponse = state { armResponseTimer() }
    }

    /// The client's read batch is over: push what was written.
    public func requestReadComplete() {
        connection?.handler.flush()
    }

    /// The client connection's writability changed: resume reading the backend when it drained.
    public func downstreamWritabilityChanged(_ writable: Bool) {
        if writable { connection?.handler.resumeReading() }
    }

    /// The client went away: abandon the exchange and the backend connection with it.
    public func cancel() {
        guard !isFinished else { return }
        finish(reusable: false)
    }

    private var isFinished: Bool {
        if case .finished = state { return true }
        return false
    }

    /// Sends a request part, flushed at the end of the client's read batch.
    private func send(_ part: HTTPClientRequestPart) {
        switch state {
        case .connecting:
            queued.append(part)
        case .awaitingResponse, .streamingResponse:
            guard let connection else { return }
            connection.handler.send(part)
            if !connection.channel.isWritable { downstream?.proxySetRequestReading(false) }
        case .finished:
            break  // the backend already answered (or failed); the rest of the body is dropped
        }
    }

    // MARK: backend side

    func upstreamRead(_ part: UpstreamResponsePart) {
        touch()
        switch part {
        case .head(let response):
            // Informational answers (100 Continue) are the gateway's business, not the client's.
            if response.status.code < 200 { return }
            responseDeadline = nil
            responseStatus = response.status
            responseHeadAt = .now()
            responseKeepAlive = response.isKeepAlive
            state = .streamingResponse
            downstream?.proxyWriteHead(response)
        case .body(let buffer):
            downstream?.proxyWriteBody(buffer)
        case .end(let trailers):
            guard case .streamingResponse = state else { return }
            let complete = requestComplete
            let downstream = self.downstream
            finish(reusable: responseKeepAlive && complete)
            downstream?.proxyWriteEnd(trailers, requestComplete: complete)
        }
    }

    func upstreamReadComplete() {
        downstream?.proxyFlush()
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        downstream?.proxySetRequestReading(writable)
    }

    var upstreamMayRead: Bool { downstream?.proxyDownstreamWritable ?? true }

    func upstreamClosed() {
        switch state {
        case .awaitingResponse:
            // A pooled connection the backend closed while idle: try once more on a new one,
            // when nothing of the body has gone out yet.
            if let connection, connection.isReused, !retried, !requestBodyStarted || !requestHasBody {
                retried = true
                connection.handler.delegate = nil
                self.connection = nil
                responseDeadline = nil
                state = .connecting
                if requestComplete { queued.append(.end(nil)) }
                acquire(fresh: true)
                return
            }
            fail(.closedEarly)
        case .streamingResponse:
            fail(.closedEarly)
        case .connecting, .finished:
            break
        }
    }

    func upstreamError(_ error: any Error) {
        // A response that cannot be read fails now, without a retry (the backend may
        // have acted on the request). For anything else the channel closes right
        // after, and upstreamClosed decides what the client sees.
        if let invalid = error as? UpstreamResponseError { fail(.invalidResponse(invalid.description)) }
    }

    private func fail(_ error: UpstreamError) {
        guard !isFinished else { return }
        let headWritten: Bool
        if case .streamingResponse = state { headWritten = true } else { headWritten = false }
        let downstream = self.downstream
        finish(reusable: false)
        downstream?.proxyFailed(error, headWritten: headWritten)
    }

    private func finish(reusable: Bool) {
        state = .finished
        downstream = nil
        pool.untrack(self)
        queued.removeAll()
        if let connection {
            self.connection = nil
            pool.release(connection, reusable: reusable)
        }
    }

    // MARK: timers

    private func touch() { lastActivity = .now() }

    private func armResponseTimer() { responseDeadline = .now() + pool.settings.responseTimeout }

    /// Called by the pool's deadline sweep (every `UpstreamPool.deadlineTick`): fails the
    /// exchange if the backend has not answered in time, or if the stream stalled
    /// (the backend's, or the client's when it stopped reading the response).
    func checkDeadlines(_ now: NIODeadline) {
        switch state {
        case .finished, .connecting:
            return  // finished exchanges untrack themselves; the connect timeout is the bootstrap's
        case .awaitingResponse:
            if let responseDeadline, now >= responseDeadline {
                UpstreamMetrics.responseTimeouts.increment()
                fail(.responseTimeout)
                return
            }
            // Waiting for a response head is the response deadline's business.
            if requestComplete { return }
        case .streamingResponse:
            break
        }
        if now >= lastActivity + pool.settings.idleTimeout {
            if case .streamingResponse = state, downstream?.proxyDownstreamWritable == false {
                // The backend was paused for the client, not stalled: the client stopped taking the response.
                fail(.clientStoppedReading)
                return
            }
            UpstreamMetrics.idleTimeouts.increment()
            fail(.idleTimeout)
        }
    }
}
