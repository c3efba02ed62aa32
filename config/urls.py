from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("crm.intake_urls")),  # /f/<form key>/ and /api/v1/contacts/export.csv
    path("api/v1/", include("contacts.urls")),
    path("api/v1/", include("campaigns.urls")),
    path("", include("crm.urls")),
    path("webhooks/", include("campaigns.webhooks")),
    path("", include("contacts.public_urls")),
]

handler404 = "crm.errors.not_found"
handler500 = "crm.errors.server_error"
