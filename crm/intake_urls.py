from django.urls import path

from crm.intake_views import ContactExportView, form_endpoint

urlpatterns = [
    path("f/<str:key>/", form_endpoint, name="form-submit"),
    path("api/v1/contacts/export.csv", ContactExportView.as_view(), name="contact-export"),
]
