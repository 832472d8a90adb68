/*
 * switchboard.js -- the browser side of a Switchboard app.
 *
 * A reconnecting WebSocket that sends and receives JSON, demultiplexes
 * {"stream": ..., "payload": ...} frames (the frames of
 * worker.consumers.WebsocketDemultiplexer), and falls back to HTTP
 * long-polling when WebSockets are unavailable. No dependencies; load it
 * with a <script> tag ({% static 'switchboard/switchboard.js' %}) and use
 * the global `Switchboard`.
 *
 *   const client = new Switchboard.Client("/ws/rooms/lobby/", {
 *     longPoll: {url: "/rooms/lobby/poll/", sendUrl: "/rooms/lobby/messages/"},
 *   });
 *   client.demultiplex("chat", (payload) => show(payload));
 *   client.stream("chat").send({text: "hello"});
 *   client.on("open", (info) => ...);   // info.transport: "websocket" | "longpoll"
 *   client.on("close", (info) => ...);  // info.delay: ms until the next try
 *
 * Reconnecting: after a connection closes (or fails to open) the client
 * waits min(maxDelay, minDelay * factor ** attempt) milliseconds, less a
 * random share of up to `jitter` of it ("equal jitter": many clients cut
 * off at once by a server restart do not come back in one burst), then
 * tries again. A connection that opens resets the attempt count.
 *
 * Long-poll protocol (what the server implements for the fallback):
 *   GET  url[?cursor=C]  -> 200 {"frames": [frame, ...], "cursor": C2 | null}
 *        held open by the server until it has frames or a timeout passes;
 *        without a cursor it answers at once (the initial state);
 *        cursor null means "keep yours".
 *   POST sendUrl, body: one frame as JSON (what send() was given).
 */
(function (root) {
  "use strict";

  var DEFAULTS = {
    minDelay: 500,        // ms before the first retry
    maxDelay: 15000,      // ms, the longest wait between tries
    factor: 2,            // growth of the wait per failed try
    jitter: 0.5,          // up to this share of the wait is taken off at random
    random: Math.random,  // replaceable for tests
    transport: "auto",    // "auto" | "websocket" | "longpoll"
    fallbackAfter: 3,     // failed WebSocket tries (none ever opened) before long-polling
    maxQueue: 100,        // frames kept while disconnected, sent on (re)connect
    protocols: undefined, // WebSocket subprotocols
    longPoll: null,       // {url, sendUrl, headers, cursorParam}
  };

  /** The wait (ms) before retry number `attempt` (0-based), jitter included. */
  function backoffDelay(attempt, options) {
    var o = Object.assign({}, DEFAULTS, options || {});
    var ceiling = Math.min(o.maxDelay, o.minDelay * Math.pow(o.factor, attempt));
    return Math.round(ceiling - ceiling * o.jitter * o.random());
  }

  /** An absolute ws:// or wss:// URL for `url` ("/ws/x/" uses this page's host). */
  function socketUrl(url, base) {
    var resolved = new URL(url, base || root.location.href);
    if (resolved.protocol === "http:") resolved.protocol = "ws:";
    if (resolved.protocol === "https:") resolved.protocol = "wss:";
    return resolved.toString();
  }

  function Client(url, options) {
    this.url = url;
    this.options = Object.assign({}, DEFAULTS, options || {});
    this.transport = null;        // the transport in use once open
    this.state = "connecting";    // "connecting" | "open" | "closed" (closed: for good)
    this.attempt = 0;
    this.listeners = {};
    this.streams = {};
    this.queue = [];
    this.socket = null;
    this.wsFailures = 0;          // WebSocket tries that never opened, in a row
    this.wsEverOpened = false;
    this.cursor = null;
    this.abort = null;
    this.timer = null;
    this.connect();
  }

  Client.prototype.on = function (type, fn) {
    (this.listeners[type] = this.listeners[type] || []).push(fn);
    return this;
  };

  Client.prototype.off = function (type, fn) {
    var list = this.listeners[type] || [];
    var index = list.indexOf(fn);
    if (index >= 0) list.splice(index, 1);
    return this;
  };

  Client.prototype.emit = function (type, value) {
    (this.listeners[type] || []).slice().forEach(function (fn) {
      try { fn(value); } catch (error) { setTimeout(function () { throw error; }); }
    });
  };

  /** Call `fn(payload)` for every frame of stream `name`. */
  Client.prototype.demultiplex = function (name, fn) {
    (this.streams[name] = this.streams[name] || []).push(fn);
    return this;
  };

  /** An object whose send(payload) sends {"stream": name, "payload": payload}. */
  Client.prototype.stream = function (name) {
    var client = this;
    return {send: function (payload) { return client.send({stream: name, payload: payload}); }};
  };

  /** Send `data` as JSON now, or when (re)connected. */
  Client.prototype.send = function (data) {
    if (this.state === "closed") throw new Error("switchboard: the client is closed");
    if (this.state !== "open") {
      if (this.queue.length >= this.options.maxQueue) this.queue.shift();
      this.queue.push(data);
      return false;
    }
    if (this.transport === "websocket") {
      this.socket.send(JSON.stringify(data));
    } else {
      this.postFrame(data);
    }
    return true;
  };

  /** Close for good: no more reconnects. */
  Client.prototype.close = function () {
    var wasOpen = this.state === "open";
    this.state = "closed";
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
    if (this.abort) this.abort.abort();
    if (!wasOpen) return;
    this.emit("close", {transport: this.transport, willRetry: false});
  };

  Client.prototype.chooseTransport = function () {
    var o = this.options;
    var hasSocket = typeof root.WebSocket === "function";
    if (o.transport === "longpoll") return "longpoll";
    if (o.transport === "websocket") return "websocket";
    if (!o.longPoll) return "websocket";
    if (!hasSocket) return "longpoll";
    if (!this.wsEverOpened && this.wsFailures >= o.fallbackAfter) return "longpoll";
    return "websocket";
  };

  Client.prototype.connect = function () {
    if (this.state === "closed") return;
    this.state = "connecting";
    var transport = this.chooseTransport();
    if (transport === "websocket") this.openSocket();
    else this.poll();
  };

  Client.prototype.opened = function (transport) {
    this.state = "open";
    this.transport = transport;
    this.attempt = 0;
    this.emit("open", {transport: transport});
    var pending = this.queue.splice(0);
    for (var i = 0; i < pending.length; i++) this.send(pending[i]);
  };

  Client.prototype.retry = function (info) {
    if (this.state === "closed") return;
    var delay = backoffDelay(this.attempt, this.options);
    this.attempt += 1;
    this.state = "connecting";
    info.willRetry = true;
    info.delay = delay;
    this.emit("close", info);
    var client = this;
    this.timer = setTimeout(function () { client.connect(); }, delay);
  };

  Client.prototype.deliver = function (data) {
    this.emit("message", data);
    if (data && typeof data === "object" && typeof data.stream === "string") {
      (this.streams[data.stream] || []).forEach(function (fn) { fn(data.payload); });
    }
  };

  // -- WebSocket -----------------------------------------------------------

  Client.prototype.openSocket = function () {
    var client = this;
    var opened = false;
    var socket;
    try {
      socket = new root.WebSocket(socketUrl(this.url), this.options.protocols);
    } catch (error) {
      this.wsFailures += 1;
      this.retry({transport: "websocket", error: error});
      return;
    }
    this.socket = socket;
    socket.onopen = function () {
      opened = true;
      client.wsFailures = 0;
      client.wsEverOpened = true;
      client.opened("websocket");
    };
    socket.onmessage = function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (error) {
        client.emit("error", {error: error, raw: event.data});
        return;
      }
      client.deliver(data);
    };
    socket.onclose = function (event) {
      if (client.socket === socket) client.socket = null;
      if (!opened) client.wsFailures += 1;
      if (client.state === "closed") return;
      client.retry({transport: "websocket", code: event.code, wasOpen: opened});
    };
  };

  // -- long-polling ---------------------------------------------------------

  Client.prototype.pollUrl = function () {
    var o = this.options.longPoll;
    var url = new URL(o.url, root.location.href);
    if (this.cursor !== null) url.searchParams.set(o.cursorParam || "cursor", this.cursor);
    return url.toString();
  };

  Client.prototype.poll = function () {
    var client = this;
    if (this.state === "closed") return;
    var o = this.options.longPoll;
    if (!o || typeof root.fetch !== "function") {
      this.retry({transport: "longpoll", error: new Error("switchboard: no long-poll URL")});
      return;
    }
    this.abort = typeof root.AbortController === "function" ? new root.AbortController() : null;
    root.fetch(this.pollUrl(), {
      credentials: "same-origin",
      headers: Object.assign({Accept: "application/json"}, o.headers || {}),
      signal: this.abort ? this.abort.signal : undefined,
    }).then(function (response) {
      if (!response.ok) throw new Error("switchboard: long-poll answered " + response.status);
      return response.json();
    }).then(function (body) {
      if (client.state === "closed") return;
      if (client.state !== "open") client.opened("longpoll");
      if (body.cursor !== null && body.cursor !== undefined) client.cursor = body.cursor;
      (body.frames || []).forEach(function (data) { client.deliver(data); });
      client.poll();
    }).catch(function (error) {
      if (client.state === "closed") return;
      client.retry({transport: "longpoll", error: error, wasOpen: client.state === "open"});
    });
  };

  Client.prototype.postFrame = function (data) {
    var client = this;
    var o = this.options.longPoll;
    return root.fetch(new URL(o.sendUrl, root.location.href).toString(), {
      method: "POST",
      credentials: "same-origin",
      headers: Object.assign({"Content-Type": "application/json"}, o.headers || {}),
      body: JSON.stringify(data),
    }).then(function (response) {
      if (!response.ok) client.emit("error", {error: new Error("send answered " + response.status)});
      return response;
    }, function (error) {
      client.emit("error", {error: error});
    });
  };

  root.Switchboard = {Client: Client, backoffDelay: backoffDelay, socketUrl: socketUrl,
                      DEFAULTS: DEFAULTS, version: "0.1"};
})(typeof window !== "undefined" ? window : this);
