// Progressive enhancement only: every page works without this file.
// - Live status: an element with data-live-status="<url>" is refreshed from
//   that JSON endpoint until the status is final (orders on their way); the
//   cancel form goes away once the parcel has left.
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

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-live-status]");
    for (var i = 0; i < live.length; i++) { follow(live[i]); }
  });
})();
