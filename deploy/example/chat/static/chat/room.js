/* The chat page: one Switchboard.Client, two streams ("chat", "presence"). */
(function () {
  "use strict";
  var room = document.getElementById("room");
  var log = document.getElementById("log");
  var members = document.getElementById("members");
  var status = document.getElementById("status");
  var seen = new Set();  // message ids already shown (history and live overlap on reconnect)
  var name = room.dataset.name;
  var query = "?name=" + encodeURIComponent(name);

  var client = new Switchboard.Client(room.dataset.socket + query, {
    transport: room.dataset.transport,
    longPoll: {
      url: room.dataset.poll,
      sendUrl: room.dataset.send + query,
      headers: {"X-CSRFToken": room.dataset.csrf},
    },
  });
  window.chatClient = client;  // for the curious (and the browser tests)

  function show(message) {
    if (seen.has(message.id)) return;
    seen.add(message.id);
    var line = document.createElement("p");
    line.className = "msg";
    line.dataset.id = message.id;
    var who = document.createElement("b");
    who.className = "who";
    who.textContent = message.name;
    var text = document.createElement("span");
    text.className = "text";
    text.textContent = message.text;
    var time = document.createElement("time");
    time.dateTime = message.sent_at;
    time.textContent = new Date(message.sent_at).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
    line.append(time, " ", who, " ", text);
    // Keep the log in id order even when a history batch arrives after a live line.
    var after = Array.prototype.find.call(log.children, function (p) { return Number(p.dataset.id) > message.id; });
    log.insertBefore(line, after || null);
    log.scrollTop = log.scrollHeight;
  }

  client.demultiplex("chat", function (payload) {
    if (payload.type === "history") payload.messages.forEach(show);
    else if (payload.type === "message") show(payload.message);
  });
  var presenceAt = 0;  // lists from two workers may cross: keep the newest
  client.demultiplex("presence", function (payload) {
    if (payload.at < presenceAt) return;
    presenceAt = payload.at;
    members.replaceChildren.apply(members, payload.members.map(function (member) {
      var item = document.createElement("li");
      item.textContent = member;
      if (member === name) item.className = "me";
      return item;
    }));
  });
  client.on("open", function (info) {
    status.textContent = "connected (" + (info.transport === "websocket" ? "WebSocket" : "long-poll") + ")";
    status.className = "status ok";
  });
  client.on("close", function (info) {
    status.textContent = info.willRetry
      ? "disconnected; retrying in " + (info.delay / 1000).toFixed(1) + " s"
      : "disconnected";
    status.className = "status down";
  });

  document.getElementById("send").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = document.getElementById("text");
    var text = input.value.trim();
    if (!text) return;
    client.stream("chat").send({text: text});
    input.value = "";
  });
})();
