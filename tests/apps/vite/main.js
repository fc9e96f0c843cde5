// Written into the page by the module, so a rendered text proves that the HTML, Vite's
// client and this module all came through the proxy. The browser test edits this line
// in a copy to see hot module replacement reach the page.
document.querySelector("#app").textContent = "vite module ran";
