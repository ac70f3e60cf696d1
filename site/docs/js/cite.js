/* Copy buttons on clause and cell pages: copy the citation shown beside the button (the same
 * Markdown `bgmatrix cite` prints: pinned to its snapshot's pages and to the raw results at
 * the commit they were measured on). The text is in the page already, so a reader without
 * JavaScript or clipboard access can still select it. The copy is the text exactly as shown
 * (no trailing newline added), so a test can compare the clipboard with the page. */
(function () {
  "use strict";

  function label(button, text) {
    var before = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", before);
    button.textContent = text;
    window.setTimeout(function () {
      button.textContent = before;
    }, 2000);
  }

  /* Clipboard API needs a secure context (https or localhost); otherwise select the text
   * and use the older command, which works on plain-http previews. */
  function fallback(button, source) {
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    label(button, ok ? "Copied" : "Selected: press Ctrl+C");
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".bgm-copy") : null;
    if (!button) {
      return;
    }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) {
      return;
    }
    var text = source.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () {
        label(button, "Copied");
      }, function () {
        fallback(button, source);
      });
    } else {
      fallback(button, source);
    }
  });
})();
