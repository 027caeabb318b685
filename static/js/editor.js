// Turns the source textarea into a CodeMirror editor (JS highlighting, line numbers).
// Without JavaScript the plain textarea is submitted as is.
// Keyboard: Tab and Shift+Tab move between fields as everywhere else; Ctrl+] and Ctrl+[
// (Cmd on a Mac) indent and outdent, CodeMirror's own keys (docs/scripting.md).
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
    labelEditor(editor, textarea);
    runDraftsFrom(editor, textarea);
  });

  // The draft's sample fields follow the endpoint path as it is typed (scripts/_draft_sample.html)
  // through an event of ours: an hx-trigger filter would be evaluated, and the CSP allows no eval.
  document.body.addEventListener("input", function (ev) {
    if (ev.target && ev.target.id === "endpoint_path") {
      document.body.dispatchEvent(new CustomEvent("endpoint-path-input"));
    }
  });

  // "Run draft" (scripts/_draft_panel.html): the request carries the editor's text as it is
  // now, and an error's line is marked in the editor until the next run or edit.
  function runDraftsFrom(editor, textarea) {
    var marked = null;
    function unmark() {
      if (marked) editor.removeLineClass(marked, "background", "draft-error-line");
      marked = null;
    }
    document.querySelectorAll("[data-needs-js]").forEach(function (el) { el.hidden = false; });
    editor.on("change", unmark);
    document.body.addEventListener("htmx:configRequest", function (ev) {
      if (ev.detail.elt.id !== "draft-button") return;
      editor.save();
      ev.detail.parameters[textarea.name] = editor.getValue();
      unmark();
    });
    document.body.addEventListener("htmx:afterSwap", function (ev) {
      if (!ev.detail.target || ev.detail.target.id !== "run-result") return; // not a draft's outcome
      var result = document.querySelector("#run-result[data-error-line]");
      var line = result ? parseInt(result.getAttribute("data-error-line"), 10) - 1 : -1;
      if (line < 0 || line >= editor.lineCount()) return;
      unmark();
      marked = editor.addLineClass(line, "background", "draft-error-line");
      editor.scrollIntoView({ line: line, ch: 0 }, 60);
    });
  }

  // The textarea is hidden now: its label, error and key hint go to the element that takes
  // focus, and clicking the label focuses the editor.
  function labelEditor(editor, textarea) {
    var input = editor.getInputField();
    var label = textarea.labels && textarea.labels[0];
    if (label) {
      label.id = label.id || textarea.id + "-label";
      input.setAttribute("aria-labelledby", label.id);
      label.addEventListener("click", function () { editor.focus(); });
    }
    var described = (textarea.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
    var keys = document.getElementById(textarea.id + "-keys");
    if (keys) {
      keys.hidden = false;
      described.push(keys.id);
    }
    if (described.length) input.setAttribute("aria-describedby", described.join(" "));
    if (textarea.getAttribute("aria-invalid")) input.setAttribute("aria-invalid", "true");
    if (input.tagName !== "TEXTAREA") { // the contenteditable input of touch devices
      input.setAttribute("role", "textbox");
      input.setAttribute("aria-multiline", "true");
    }
  }
});
