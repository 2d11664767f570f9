// /api/docs/: starts Swagger UI on the schema named by #swagger-ui's data-schema-url.
// A file, not an inline script, so that the page works under script-src 'self'.
(function () {
  "use strict";
  const root = document.getElementById("swagger-ui");
  if (!root || typeof window.SwaggerUIBundle !== "function") return;
  const csrf = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.schemaUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    layout: "BaseLayout",
    // "Try it out" from a signed-in browser session: Django wants the CSRF token on writes.
    requestInterceptor: (request) => {
      if (csrf) request.headers["X-CSRFToken"] = decodeURIComponent(csrf.split("=")[1]);
      return request;
    },
  });
})();
