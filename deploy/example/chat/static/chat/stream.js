/* The event-stream page: an EventSource on the room's text/event-stream endpoint. */
(function () {
  "use strict";
  var page = document.getElementById("stream");
  var log = document.getElementById("log");
  var members = document.getElementById("members");
  var status = document.getElementById("status");
  var source = new EventSource(page.dataset.events);

  source.addEventListener("open", function () {
    status.textContent = "streaming";
    status.className = "status ok";
  });
  source.addEventListener("error", function () {
    status.textContent = "reconnecting…";  // EventSource retries by itself
    status.className = "status down";
  });
  var seen = new Set();  // the history and a live event may carry the same message
  source.addEventListener("chat", function (event) {
    var message = JSON.parse(event.data).message;
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
    line.append(who, " ", text);
    var after = Array.prototype.find.call(log.children, function (p) {
      return Number(p.dataset.id) > message.id;
    });
    log.insertBefore(line, after || null);
    log.scrollTop = log.scrollHeight;
  });
  var presenceAt = 0;  // lists from two workers may cross: keep the newest
  source.addEventListener("presence", function (event) {
    var payload = JSON.parse(event.data);
    if (payload.at < presenceAt) return;
    presenceAt = payload.at;
    var names = payload.members;
    members.replaceChildren.apply(members, names.map(function (member) {
      var item = document.createElement("li");
      item.textContent = member;
      return item;
    }));
  });
})();
