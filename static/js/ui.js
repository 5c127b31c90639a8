// The dashboard's shell: the phone menu, the theme toggle, questions before destructive
// forms, copy buttons and Back links. Pages (the chat too) use these through data attributes.
"use strict";

(() => {
  const root = document.documentElement;
  root.classList.add("js");

  // Menu button: the navigation folds behind it on narrow screens (CSS decides when).
  function setUpMenu() {
    const button = document.querySelector(".menu-button");
    const nav = button && document.getElementById(button.getAttribute("aria-controls"));
    if (!nav) return;
    button.hidden = false;
    button.addEventListener("click", () => {
      const open = button.getAttribute("aria-expanded") !== "true";
      button.setAttribute("aria-expanded", String(open));
      nav.toggleAttribute("data-open", open);
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && nav.hasAttribute("data-open")) {
        event.preventDefault();  // handled: the page's own Esc (the chat's Stop) stays out
        button.setAttribute("aria-expanded", "false");
        nav.removeAttribute("data-open");
        button.focus();
      }
    });
  }

  // The person's menu (a <details>) closes on a click elsewhere or Escape, as menus do.
  function setUpAccountMenu() {
    const menu = document.querySelector("details.account");
    if (!menu) return;
    document.addEventListener("click", (event) => {
      if (menu.open && !menu.contains(event.target)) menu.open = false;
    });
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && menu.open) {
        event.preventDefault();
        menu.open = false;
        menu.querySelector("summary").focus();
      }
    });
  }

  // Theme: system → light → dark → system. The cookie lets the server render the same theme
  // on the next page, so it never flashes in the other one.
  const THEMES = ["", "light", "dark"];

  function currentTheme() {
    const value = root.getAttribute("data-theme") || "";
    return THEMES.includes(value) ? value : "";
  }

  function applyTheme(theme) {
    if (theme) {
      root.setAttribute("data-theme", theme);
      document.cookie = `theme=${theme}; path=/; max-age=31536000; samesite=lax`;
    } else {
      root.removeAttribute("data-theme");
      document.cookie = "theme=; path=/; max-age=0; samesite=lax";
    }
    for (const label of document.querySelectorAll(".theme-label")) {
      label.textContent = `Theme: ${theme || "system"}`;
    }
  }

  function setUpThemeToggle() {
    for (const button of document.querySelectorAll("[data-theme-toggle]")) {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        applyTheme(THEMES[(THEMES.indexOf(currentTheme()) + 1) % THEMES.length]);
      });
    }
  }

  // Confirmation: <form data-confirm="Question?" data-confirm-button="Remove"> asks first.
  function confirmAction(question, confirmLabel) {
    const dialog = document.getElementById("confirm-dialog");
    if (!dialog || typeof dialog.showModal !== "function") {
      return Promise.resolve(window.confirm(question));
    }
    dialog.querySelector("#confirm-question").textContent = question;
    dialog.querySelector("#confirm-yes").textContent = confirmLabel || "Yes";
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    });
  }

  function setUpConfirmations() {
    document.addEventListener("submit", async (event) => {
      const form = event.target;
      if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
      if (form.dataset.confirmed === "yes") return;
      event.preventDefault();
      const submitter = event.submitter;
      if (await confirmAction(form.dataset.confirm, form.dataset.confirmButton)) {
        form.dataset.confirmed = "yes";
        form.requestSubmit(submitter && submitter.form === form ? submitter : undefined);
        delete form.dataset.confirmed;
      }
    });
  }

  // Copy: [data-copy-target="#id"] copies that element's text.
  // navigator.clipboard exists only on https or localhost; a household's LAN address is often
  // plain http, where the old selection-and-execCommand way still works.
  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    try {
      if (!document.execCommand("copy")) throw new Error("copy refused");
    } finally {
      area.remove();
    }
  }

  // Copies the text and says so on the button for a moment (the chat's buttons use it too).
  async function copyWithFeedback(button, text) {
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    try {
      await copyText(text);
      button.textContent = "Copied";
      button.setAttribute("data-copied", "");
    } catch {
      button.textContent = "Select and copy by hand";
    }
    setTimeout(() => {
      button.textContent = label;
      button.removeAttribute("data-copied");
    }, 2000);
  }

  function setUpCopyButtons() {
    document.addEventListener("click", (event) => {
      const button = event.target instanceof Element && event.target.closest("[data-copy-target]");
      const target = button && document.querySelector(button.dataset.copyTarget);
      if (target) copyWithFeedback(button, target.textContent.trim());
    });
  }

  // Back links go back in history when there is somewhere to go back to; else they lead home.
  function setUpBackLinks() {
    for (const link of document.querySelectorAll("a[data-back]")) {
      link.addEventListener("click", (event) => {
        if (window.history.length > 1 && document.referrer) {
          event.preventDefault();
          window.history.back();
        }
      });
    }
  }

  window.sovereignUi = { copyWithFeedback };
  setUpMenu();
  setUpAccountMenu();
  setUpThemeToggle();
  setUpConfirmations();
  setUpCopyButtons();
  setUpBackLinks();
})();
