from django.urls import path

from crm import views, webhooks

urlpatterns = [
    path("webhooks/stripe/", webhooks.stripe_webhook, name="stripe-webhook"),
    path("webhooks/stripe/<slug:slug>/", webhooks.stripe_webhook, name="stripe-webhook-workspace"),
    path("crm/summary/", views.summary_index, name="crm-summary-index"),
    path("crm/summary/<slug:slug>/", views.summary, name="crm-summary"),
    path("crm/missed-payments/", views.missed_payments, name="crm-missed-payments"),
]
