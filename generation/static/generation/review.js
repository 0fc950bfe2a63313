// Keyboard for the review page of an instruction data set: j / k move between rows, a accepts,
// r rejects, e opens the row's edit box, Ctrl+Enter (or Cmd+Enter) saves it, Esc leaves it.
// Every key presses one of the row's own buttons, so the page does exactly what it does
// without JavaScript (a plain form post, then the server's redirect to the next row).
(function () {
  "use strict";

  var root = document.getElementById("review");
  if (!root) {
    return;
  }
  var rows = Array.prototype.slice.call(root.querySelectorAll(".review-row"));
  if (!rows.length) {
    return;
  }
  var current = 0;
  var sent = false;

  function select(index, scroll) {
    index = Math.max(0, Math.min(rows.length - 1, index));
    rows[current].classList.remove("current");
    current = index;
    rows[current].classList.add("current");
    if (scroll) {
      rows[current].scrollIntoView({ block: "nearest" });
    }
  }

  function press(row, selector) {
    var button = row.querySelector(selector);
    if (!button || sent) {
      return;
    }
    sent = true; // one post per page: the next page comes with the server's redirect
    button.click();
  }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT" || target.isContentEditable;
  }

  function edit(row) {
    var box = row.querySelector("details.review-edit");
    if (!box) {
      return;
    }
    box.open = true;
    var first = box.querySelector("textarea");
    first.focus();
    first.setSelectionRange(first.value.length, first.value.length);
  }

  var start = 0;
  if (window.location.hash) {
    var wanted = document.getElementById(window.location.hash.slice(1));
    if (wanted && rows.indexOf(wanted) >= 0) {
      start = rows.indexOf(wanted);
    }
  }
  select(start, true);
  root.dataset.state = "ready";

  rows.forEach(function (row, index) {
    row.addEventListener("click", function () {
      select(index, false);
    });
  });

  document.addEventListener("keydown", function (event) {
    var row = rows[current];
    if (typing(event.target)) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.form) {
        event.preventDefault();
        press(event.target.form, "button.review-save");
      } else if (event.key === "Escape") {
        event.target.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    var keys = {
      j: function () { select(current + 1, true); },
      k: function () { select(current - 1, true); },
      a: function () { press(row, "button.review-accept"); },
      r: function () { press(row, "button.review-reject"); },
      e: function () { edit(row); },
    };
    var handler = keys[event.key];
    if (handler) {
      event.preventDefault(); // "e" must not also type into the box it opens
      handler();
    }
  });
})();
