// Progressive enhancement only: every page works without this file.
// - Live status: an element with data-live-status="<url>" is refreshed from
//   that JSON endpoint until the status is final (orders on their way); the
//   cancel form goes away once the parcel has left; with
//   data-reload-when-final the page reloads once it is final (a processed
//   video appears with its player).
// - Seat map: a form with data-seat-map shows how many seats are picked and
//   what they cost as seats are ticked.
// - Upload: a form with data-upload sends its file with XMLHttpRequest and
//   shows the upload's progress.
"use strict";
(function () {
  document.documentElement.classList.add("js");

  var CANCELLABLE = ["pending", "reserved", "paid"];

  function hideCancelUnless(status) {
    var form = document.querySelector("[data-cancel-form]");
    if (form && CANCELLABLE.indexOf(status) < 0) { form.hidden = true; }
  }

  function follow(element) {
    var url = element.getAttribute("data-live-status");
    var delay = 1000;
    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) { throw new Error("status " + response.status); }
          return response.json();
        })
        .then(function (state) {
          if (element.textContent !== state.label) { element.textContent = state.label; }
          element.setAttribute("data-status", state.status);
          hideCancelUnless(state.status);
          if (state.final) {
            element.removeAttribute("data-live-status");
            if (element.hasAttribute("data-reload-when-final")) { window.location.reload(); }
            return;
          }
          delay = 1000;
          setTimeout(poll, delay);
        })
        .catch(function () {
          // Back off while the service is unreachable; the page still has
          // its Refresh link.
          delay = Math.min(delay * 2, 30000);
          setTimeout(poll, delay);
        });
    }
    setTimeout(poll, delay);
  }

  function money(cents, currency) {
    return Math.floor(cents / 100) + "." + ("0" + (cents % 100)).slice(-2) + " " + currency;
  }

  function seatMap(form) {
    var summary = form.querySelector("[data-seat-summary]");
    var currency = form.getAttribute("data-currency");
    function update() {
      var picked = form.querySelectorAll("input[name=seat]:checked");
      var cents = 0;
      for (var i = 0; i < picked.length; i++) { cents += parseInt(picked[i].getAttribute("data-price"), 10) || 0; }
      summary.hidden = false;
      summary.textContent = picked.length === 0 ? "No seat picked yet."
        : picked.length + (picked.length === 1 ? " seat, " : " seats, ") + money(cents, currency);
    }
    form.addEventListener("change", update);
    update();
  }

  function upload(form) {
    var bar = form.querySelector("[data-upload-progress]");
    var status = form.querySelector("[data-upload-status]");
    form.addEventListener("submit", function (event) {
      if (!window.FormData) { return; }
      event.preventDefault();
      var request = new XMLHttpRequest();
      request.open("POST", form.getAttribute("action"));
      request.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) { return; }
        bar.hidden = false;
        bar.value = Math.round(e.loaded * 100 / e.total);
        status.textContent = "Uploading: " + bar.value + " %";
      });
      request.addEventListener("load", function () {
        // Success redirects to the task's page; a refusal is the page
        // with its message, shown as the server rendered it.
        if (request.status < 400) { window.location.assign(request.responseURL); return; }
        document.open(); document.write(request.responseText); document.close();
      });
      request.addEventListener("error", function () {
        status.textContent = "The upload failed; check the connection and try again.";
      });
      status.textContent = "Uploading…";
      request.send(new FormData(form));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-live-status]");
    for (var i = 0; i < live.length; i++) { follow(live[i]); }
    var maps = document.querySelectorAll("[data-seat-map]");
    for (var j = 0; j < maps.length; j++) { seatMap(maps[j]); }
    var uploads = document.querySelectorAll("[data-upload]");
    for (var k = 0; k < uploads.length; k++) { upload(uploads[k]); }
  });
})();
