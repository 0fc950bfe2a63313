// The voting loop: GET the first pair, then POST a vote (or a skip) with ?next=1, which answers
// the next pair too (claimed with the vote): one request per vote, without reloading.
// Answers arrive twice: as text, and as HTML the server rendered from Markdown with raw HTML
// switched off (annotation/markdown.py); only those *_html / *_diff fields are inserted as HTML
// (the pair's, and those of each earlier turn in ``history``).
// The word diff costs the server more than the rest of a pair, and most annotators never look
// at it: while the box is unticked, votes ask for the next pair without it (&diff=0: its fields
// come null) and the diff panes stay empty; ticking the box shows the diff the pair came with,
// or fetches the pair on screen again with its diff (next-pair answers the pair one holds).
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
  var skipUrl = root.dataset.skipUrl;
  var showDiff = byId("show-diff");
  var csrfToken = root.dataset.csrfToken;
  var pair = byId("pair");
  var loading = byId("loading");
  var done = byId("done");
  var message = byId("message");
  var comment = byId("comment");
  var bar = byId("progress-bar");
  var buttons = Array.prototype.slice.call(
    root.querySelectorAll("button.choice, button.skip-reason")
  );
  var KEYS = {
    "1": "left",
    "2": "tie",
    "3": "right",
    "4": "tie_bothbad",
    ArrowLeft: "left",
    ArrowDown: "tie",
    ArrowRight: "right",
    ArrowUp: "tie_bothbad",
  };
  var token = null;
  var busy = false;
  var diffs = null; // the pair on screen, when it came with its word diff

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

  // Server-rendered, already safe HTML (see the note at the top).
  function setHtml(target, html) {
    target.innerHTML = html || "";
  }

  // An answer with no text would be a blank card: say that it is empty instead.
  function setAnswer(target, html, text) {
    if (text && text.trim()) {
      setHtml(target, html);
      return;
    }
    target.textContent = "";
    var empty = document.createElement("p");
    empty.className = "empty-answer hint";
    empty.textContent = root.dataset.msgEmptyAnswer;
    target.appendChild(empty);
  }

  // Skips leave the total (the pair goes to someone else): the count beside it says why.
  function countSkip() {
    var shown = byId("progress-skipped");
    var n = Number(shown.dataset.skipped || 0) + 1;
    shown.dataset.skipped = String(n);
    shown.textContent = "(" + root.dataset.msgSkippedCount.replace("{n}", String(n)) + ")";
    shown.hidden = false;
  }

  // The earlier turns of a multi-turn question, each from the page's <template>: the user turn
  // and both replies, rendered by the server (*_html fields only).
  function setHistory(history) {
    var box = byId("history");
    var template = byId("exchange-template");
    history = history || [];
    box.textContent = "";
    history.forEach(function (turn, index) {
      var exchange = template.content.firstElementChild.cloneNode(true);
      exchange.querySelector(".turn-number").textContent = String(index + 1);
      setHtml(exchange.querySelector(".exchange-question"), turn.question_html);
      setAnswer(exchange.querySelector(".exchange-left"), turn.left_html, turn.left);
      setAnswer(exchange.querySelector(".exchange-right"), turn.right_html, turn.right);
      box.appendChild(exchange);
    });
    var multi = history.length > 0;
    byId("conversation-note").hidden = !multi;
    byId("question-single").hidden = multi;
    byId("question-multi").hidden = !multi;
    byId("question-turn").textContent = String(history.length + 1);
  }

  function setDiff(on) {
    ["left", "right"].forEach(function (side) {
      byId("answer-" + side).hidden = on;
      byId("diff-" + side).hidden = !on;
      byId("diff-" + side).textContent = "";
    });
    if (on && diffs) {
      setDiffs(diffs);
    } else if (on && token) {
      loadDiff(token);
    }
  }

  // data-state on the root (loading, ready, busy, done, error) lets tests and styles follow.
  function setState(state) {
    root.dataset.state = state;
  }

  function showDone() {
    setState("done");
    token = null;
    diffs = null;
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
      return response.json().then(showPair);
    });
  }

  function showPair(data) {
    if (!data) {
      showDone();
      return;
    }
    token = data.token;
    setHistory(data.history);
    setHtml(byId("question"), data.question_html);
    setAnswer(byId("answer-left"), data.left_html, data.left);
    setAnswer(byId("answer-right"), data.right_html, data.right);
    diffs = typeof data.left_diff === "string" ? data : null;
    setDiff(showDiff.checked);
    setProgress(data.progress);
    comment.value = "";
    loading.hidden = true;
    pair.hidden = false;
    setEnabled(true);
    setState("ready");
    pair.scrollIntoView({ block: "start" });
  }

  // The diff panes, from a pair that came with its diff (see the note at the top).
  function setDiffs(data) {
    setHtml(byId("diff-left"), data.left_diff);
    setHtml(byId("diff-right"), data.right_diff);
  }

  // The word diff of the pair on screen (``asked``: its token), fetched when the box is ticked.
  function loadDiff(asked) {
    fetch(nextUrl, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
    })
      .then(function (response) {
        return response.status === 200 ? response.json() : null;
      })
      .then(function (data) {
        if (data && data.token === asked && token === asked && !diffs) {
          diffs = data;
          if (showDiff.checked) {
            setDiffs(data);
          }
        }
      })
      .catch(function () {
        say(root.dataset.msgError);
      });
  }

  function vote(choice) {
    send(voteUrl, { choice: choice, comment: comment.value }, root.dataset.msgSaved);
  }

  function skip(reason) {
    send(skipUrl, { reason: reason }, root.dataset.msgSkipped, countSkip);
  }

  function send(url, body, saved, then) {
    if (busy || !token) {
      return;
    }
    busy = true;
    setState("busy");
    setEnabled(false);
    say("");
    var query = showDiff.checked ? "?next=1" : "?next=1&diff=0";
    fetch(url.replace("TOKEN", encodeURIComponent(token)) + query, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        Accept: "application/json",
        "Content-Type": "application/json",
        "X-CSRFToken": csrfToken,
      },
      body: JSON.stringify(body),
    })
      .then(function (response) {
        if (response.status === 429) {
          say(root.dataset.msgThrottled);
          setEnabled(true);
          return;
        }
        return response.json().then(function (data) {
          if (response.ok) {
            if (then) {
              then();
            }
            setProgress(data.progress);
            say(saved);
            token = null;
            showPair(data.next);
            return;
          } else if (response.status === 409 || response.status === 404) {
            say(data.detail || root.dataset.msgError);
          } else {
            var field = data.choice || data.reason;
            say((field && field[0]) || data.detail || root.dataset.msgError);
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
      if (button.dataset.reason) {
        skip(button.dataset.reason);
      } else {
        vote(button.dataset.choice);
      }
    });
  });
  showDiff.addEventListener("change", function () {
    setDiff(showDiff.checked);
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
