// The voting loop: GET the next pair, POST a vote, repeat, without reloading the page.
// Every text from the server is set with textContent (never innerHTML): answers are untrusted.
(function () {
  "use strict";

  var root = document.getElementById("voting");
  if (!root) {
    return;
  }
  var byId = function (id) {
    return document.getElementById(id);
  };
  var nextUrl = root.dataset.nextUrl;
  var voteUrl = root.dataset.voteUrl;
  var csrfToken = root.dataset.csrfToken;
  var pair = byId("pair");
  var loading = byId("loading");
  var done = byId("done");
  var message = byId("message");
  var comment = byId("comment");
  var bar = byId("progress-bar");
  var buttons = Array.prototype.slice.call(root.querySelectorAll("button.choice"));
  var KEYS = {
    "1": "left",
    "2": "tie",
    "3": "right",
    ArrowLeft: "left",
    ArrowDown: "tie",
    ArrowRight: "right",
  };
  var token = null;
  var busy = false;

  function say(text) {
    message.textContent = text || "";
  }

  function setProgress(progress) {
    bar.max = Math.max(progress.total, 1);
    bar.value = progress.done;
    byId("progress-done").textContent = String(progress.done);
    byId("progress-total").textContent = String(progress.total);
  }

  function setEnabled(enabled) {
    buttons.forEach(function (button) {
      button.disabled = !enabled;
    });
  }

  function addProse(target, text) {
    if (!text) {
      return;
    }
    var div = document.createElement("div");
    div.className = "prose";
    div.textContent = text;
    target.appendChild(div);
  }

  // Plain text with line breaks kept; ``` fenced blocks become <pre><code> (still textContent).
  function renderText(target, text) {
    target.replaceChildren();
    var fence = /```[^\n]*\n?([\s\S]*?)(?:\n?```|$)/g;
    var last = 0;
    var match;
    while ((match = fence.exec(text)) !== null) {
      addProse(target, text.slice(last, match.index).replace(/\n+$/, ""));
      var pre = document.createElement("pre");
      var code = document.createElement("code");
      code.textContent = match[1];
      pre.appendChild(code);
      target.appendChild(pre);
      last = fence.lastIndex;
      if (last >= text.length) {
        break;
      }
    }
    addProse(target, text.slice(last).replace(/^\n+/, ""));
  }

  // data-state on the root (loading, ready, busy, done, error) lets tests and styles follow.
  function setState(state) {
    root.dataset.state = state;
  }

  function showDone() {
    setState("done");
    token = null;
    pair.hidden = true;
    loading.hidden = true;
    done.hidden = false;
    setEnabled(false);
  }

  function loadNext() {
    return fetch(nextUrl, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
    }).then(function (response) {
      if (response.status === 204) {
        showDone();
        return;
      }
      if (!response.ok) {
        setState("error");
        say(response.status === 429 ? root.dataset.msgThrottled : root.dataset.msgError);
        return;
      }
      return response.json().then(function (data) {
        token = data.token;
        renderText(byId("question"), data.question);
        renderText(byId("answer-left"), data.left);
        renderText(byId("answer-right"), data.right);
        setProgress(data.progress);
        comment.value = "";
        loading.hidden = true;
        pair.hidden = false;
        setEnabled(true);
        setState("ready");
        pair.scrollIntoView({ block: "start" });
      });
    });
  }

  function vote(choice) {
    if (busy || !token) {
      return;
    }
    busy = true;
    setState("busy");
    setEnabled(false);
    say("");
    fetch(voteUrl.replace("TOKEN", encodeURIComponent(token)), {
      method: "POST",
      credentials: "same-origin",
      headers: {
        Accept: "application/json",
        "Content-Type": "application/json",
        "X-CSRFToken": csrfToken,
      },
      body: JSON.stringify({ choice: choice, comment: comment.value }),
    })
      .then(function (response) {
        if (response.status === 429) {
          say(root.dataset.msgThrottled);
          setEnabled(true);
          return;
        }
        return response.json().then(function (data) {
          if (response.ok) {
            setProgress(data.progress);
            say(root.dataset.msgSaved);
          } else if (response.status === 409 || response.status === 404) {
            say(data.detail || root.dataset.msgError);
          } else {
            say((data.choice && data.choice[0]) || data.detail || root.dataset.msgError);
            setEnabled(true);
            return;
          }
          token = null;
          return loadNext();
        });
      })
      .catch(function () {
        say(root.dataset.msgError);
        setEnabled(true);
      })
      .then(function () {
        busy = false;
        if (root.dataset.state === "busy") {
          setState(token ? "ready" : "error");
        }
      });
  }

  buttons.forEach(function (button) {
    button.addEventListener("click", function () {
      vote(button.dataset.choice);
    });
  });

  // Shortcuts are off while the comment box (or any text field) has focus.
  function typing(target) {
    return (
      target &&
      (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.isContentEditable)
    );
  }
  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    if (typing(event.target)) {
      return;
    }
    var choice = KEYS[event.key];
    if (!choice) {
      return;
    }
    event.preventDefault();
    if (!event.repeat) {
      vote(choice);
    }
  });
  comment.addEventListener("focus", function () {
    byId("keys-on").hidden = true;
    byId("keys-off").hidden = false;
  });
  comment.addEventListener("blur", function () {
    byId("keys-on").hidden = false;
    byId("keys-off").hidden = true;
  });

  loadNext().catch(function () {
    say(root.dataset.msgError);
  });
})();
