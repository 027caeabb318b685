// Turns the source textarea into a CodeMirror editor (JS highlighting, line numbers).
// Without JavaScript the plain textarea is submitted as is.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  document.querySelectorAll("textarea[data-code-editor]").forEach(function (textarea) {
    if (!window.CodeMirror) return;
    var editor = window.CodeMirror.fromTextArea(textarea, {
      mode: "javascript",
      lineNumbers: true,
      matchBrackets: true,
      indentUnit: 2,
      tabSize: 2,
      viewportMargin: Infinity,
      extraKeys: { Tab: false, "Shift-Tab": false } // keyboard users can tab out of the editor
    });
    editor.on("change", function () { editor.save(); });
    textarea.form.addEventListener("submit", function () { editor.save(); });
  });
});
