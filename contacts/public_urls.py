from django.urls import path, re_path

from contacts import public_views

urlpatterns = [
    path("u/<str:token>/", public_views.unsubscribe_page, name="unsubscribe"),
    # Every other shape also reaches the view (a friendly 404 for bad tokens), and a slash-less URL
    # is served directly so a one-click POST is never answered with a redirect.
    re_path(r"^u/(?P<token>.+?)/?$", public_views.unsubscribe_page),
]
